import { randomFillSync } from 'node:crypto';
import type { Logger } from 'pino';
import type { AdapterRegistry } from '../../adapters/registry.js';
import { DekCache, type Clock } from '../cache/dek-cache.js';
import { commitTag, verifyCommitTag } from '../crypto/commit.js';
import { envelopeVersion, open, seal } from '../crypto/envelope.js';
import { NoncePool } from '../crypto/nonce.js';
import { EncryptionBudget } from '../crypto/budget.js';
import { allocSecret, zeroize } from '../crypto/secret.js';
import { decodeBase64 } from '../protocol/base64.js';
import { GatewayError, toGatewayError, type ErrorCode } from '../protocol/errors.js';
import { parseRequest, type Command, type KeyRef } from '../protocol/parser.js';
import type { AccessControl } from '../policy/types.js';
import { describeClient, type RequestContext, type RequestObserver, type RequestTrace } from './context.js';
import { formatError, formatOk } from '../protocol/reply.js';
import { findVersion, newestEnabled, type KeyRecord, type KeyStore, type VersionRecord } from '../keystore/types.js';

/** How the gateway treats keys; part of the validated config. */
export interface GatewayOptions {
  /** Create a key on first GET or ENC of an unknown id (development default). */
  readonly autoCreate: boolean;
  /** KEK URI for keys created without one. */
  readonly defaultKek: string;
  /** Most unwrapped DEKs cached. */
  readonly cacheMaxEntries: number;
  /** Lifetime of a cached DEK in ms. */
  readonly cacheTtlMs: number;
  /** Injected clock for the cache (tests). */
  readonly clock?: Clock;
  /** Authentication and per-key authorization; absent: everyone may do everything (development). */
  readonly access?: AccessControl;
  /** Sees one record per request (the audit log); when unavailable, requests are refused. */
  readonly observer?: RequestObserver;
  /** Most ENC calls per DEK version (default 2^32, NIST's bound for random 96-bit nonces). */
  readonly maxEncryptionsPerVersion?: number;
  /** Encryptions reserved per key-store write (default: the limit / 1024, between 1 and 65536). */
  readonly encryptionReservationBlock?: number;
}

/** A reply line without its LF: synchronous when served from cache. */
export type Reply = string | Promise<string>;



/**
 * The protocol's meaning, apart from any socket: turns one request line into
 * one reply line. Cached GET/ENC/DEC answer synchronously; anything needing
 * the KMS or the disk answers with a promise.
 */
export class Gateway {
  readonly cache: DekCache;
  private readonly nonces = new NoncePool();
  // Per key id: the tail of its chain of changes, so versions are allocated one at a time.
  private readonly keyLocks = new Map<string, Promise<unknown>>();

  private readonly budget: EncryptionBudget;

  constructor(
    private readonly store: KeyStore,
    private readonly adapters: AdapterRegistry,
    private readonly options: GatewayOptions,
    private readonly log: Logger,
  ) {
    const limit = options.maxEncryptionsPerVersion ?? 2 ** 32;
    this.budget = new EncryptionBudget({
      limit,
      // A restart forfeits at most one block, so small limits get small blocks.
      block: options.encryptionReservationBlock ?? Math.min(65_536, Math.max(1, Math.floor(limit / 1024))),
      reserved: (keyId, version) => {
        const record = this.store.get(keyId);
        return (record && findVersion(record, version)?.encryptions) ?? 0;
      },
      reserve: (keyId, version, upTo) =>
        this.exclusive(keyId, async () => {
          const record = this.store.get(keyId);
          if (!record) throw new GatewayError('NOT_FOUND', 'no such key');
          await this.store.put({
            ...record,
            versions: record.versions.map((v) => (v.version === version ? { ...v, encryptions: Math.max(v.encryptions ?? 0, upTo) } : v)),
          });
        }),
      warn: (keyId, version, used, fraction) =>
        this.log.warn(
          { keyId, version, encryptions: used, limit: options.maxEncryptionsPerVersion ?? 2 ** 32, fraction },
          `DEK version has used ${Math.round(fraction * 100)} % of its encryption budget: ROTATE the key soon`,
        ),
    });
    this.cache = new DekCache({
      maxEntries: options.cacheMaxEntries,
      ttlMs: options.cacheTtlMs,
      ...(options.clock ? { clock: options.clock } : {}),
      load: (keyId, version) => this.unwrapVersion(keyId, version),
    });
  }

  /**
   * Parses, authorizes and runs one request line for the connection `ctx`.
   * Never throws: failures become `ERR` lines.
   */
  handleLine(line: string, ctx?: RequestContext): Reply {
    const observer = this.options.observer;
    if (observer === undefined) return this.run(line, ctx, undefined);
    const started = performance.now();
    if (!observer.available) return formatError('INTERNAL', 'audit log unavailable; requests are refused');
    const trace: RequestTrace & { verb: string } = { verb: '-' };
    const reply = this.run(line, ctx, trace);
    const done = (text: string) => {
      const code = text.startsWith('OK') ? 'OK' : (text.split(' ', 2)[1] as ErrorCode);
      observer.record({
        time: new Date().toISOString(),
        client: describeClient(ctx),
        verb: trace.verb,
        ...(trace.keyId !== undefined ? { keyId: trace.keyId } : {}),
        ...(trace.version !== undefined ? { version: trace.version } : {}),
        outcome: code,
        latencyMs: Math.round((performance.now() - started) * 1000) / 1000,
        ...(trace.kek !== undefined ? { kek: trace.kek } : {}),
      });
      return text;
    };
    return typeof reply === 'string' ? done(reply) : reply.then(done);
  }

  private run(line: string, ctx: RequestContext | undefined, trace: (RequestTrace & { verb: string }) | undefined): Reply {
    const parsed = parseRequest(line);
    if (!parsed.ok) return formatError(parsed.code, parsed.text);
    const command = parsed.command;
    if (trace) {
      trace.verb = command.verb;
      if ('key' in command) {
        trace.keyId = command.key.id;
        if (command.key.version !== undefined) trace.version = command.key.version;
      }
      if ('kek' in command && command.kek !== undefined) trace.kek = command.kek;
    }
    const access = this.options.access;
    if (command.verb === 'AUTH') return this.authenticate(command.token, ctx);
    if (access && command.verb !== 'PING' && !access.authorize(ctx?.client, command.verb, 'key' in command ? command.key.id : undefined)) {
      return formatError('FORBIDDEN', `not allowed to ${command.verb}${'key' in command ? ' this key' : ''}`);
    }
    return this.handle(command, trace, ctx?.client);
  }

  private authenticate(token: string, ctx: RequestContext | undefined): string {
    const access = this.options.access;
    if (!access || !ctx) return formatError('BAD_REQUEST', 'AUTH is not in use on this gateway');
    const result = access.authenticate(token, ctx.identity);
    if (!result.ok) {
      return formatError('FORBIDDEN', result.reason === 'rate-limited' ? 'too many failed attempts; try again later' : 'authentication failed');
    }
    ctx.client = result.client;
    return formatOk(result.client);
  }

  handle(command: Command, trace?: RequestTrace, client?: string): Reply {
    try {
      const reply = this.dispatch(command, trace, client);
      if (typeof reply === 'string') return reply;
      return reply.catch((err: unknown) => this.fail(command, err));
    } catch (err) {
      return this.fail(command, err);
    }
  }

  /** Zeroizes every cached DEK. */
  close(): void {
    this.cache.clear();
  }

  private fail(command: Command, err: unknown): string {
    const error = toGatewayError(err);
    if (error.code === 'INTERNAL' || error.code === 'KMS_UNAVAILABLE' || error.code === 'KMS_DENIED') {
      // The cause may hold an SDK message; it goes to the log, never to the client.
      const cause = error.cause instanceof Error ? { name: error.cause.name, message: error.cause.message } : undefined;
      this.log.warn({ verb: command.verb, code: error.code, err: error.message, cause }, 'request failed');
    }
    return formatError(error.code, error.message);
  }

  private dispatch(command: Command, trace: RequestTrace | undefined, client?: string): Reply {
    switch (command.verb) {
      case 'PING':
        return 'OK PONG';
      case 'AUTH':
        return formatError('BAD_REQUEST', 'AUTH is handled per connection');
      case 'GET':
        return this.get(command.key, trace);
      case 'ENC':
        return this.enc(command.key, command.data, command.aad, trace);
      case 'DEC':
        return this.dec(command.key, command.data, command.aad, trace);
      case 'CREATE':
        return this.create(command.key.id, command.kek, trace).then((v) => this.madeVersion(v, trace));
      case 'ROTATE':
        return this.rotate(command.key.id, command.kek, trace).then((v) => this.madeVersion(v, trace));
      case 'REWRAP':
        return this.rewrap(command.key.id, command.kek, command.key.version).then((n) => formatOk(String(n)));
      case 'DESTROY':
        return this.destroy(command.key.id, command.key.version as number).then((v) => formatOk(String(v)));
      case 'INFO':
        return formatOk(JSON.stringify(this.info(command.key.id)));
      case 'LIST': {
        const ids = this.store.list(command.prefix);
        const access = this.options.access;
        // Under a policy a client sees only the ids it may LIST.
        return formatOk(JSON.stringify(access ? ids.filter((id) => access.authorize(client, 'LIST', id)) : ids));
      }
    }
  }

  /** `OK <version>` for CREATE/ROTATE, and the new version into the request's audit record. */
  private madeVersion(version: number, trace: RequestTrace | undefined): string {
    if (trace) trace.version = version;
    return formatOk(String(version));
  }

  // --- key use -------------------------------------------------------------

  private get(ref: KeyRef, trace: RequestTrace | undefined): Reply {
    return this.withDek(ref, 'use', (dek) => formatOk(dek.toString('base64')), trace);
  }

  private enc(ref: KeyRef, data: string, aadText: string | undefined, trace: RequestTrace | undefined): Reply {
    // Decode first: bad base64 is the caller's fault and must not create a key.
    const plaintext = decodeBase64(data, 'plaintext');
    let aad: Buffer | undefined;
    try {
      aad = aadText === undefined ? undefined : decodeBase64(aadText, 'aad');
    } catch (err) {
      zeroize(plaintext);
      throw err;
    }
    let reply: Reply | undefined;
    try {
      const sealWith = (dek: Buffer, keyId: string, version: number) =>
        formatOk(seal({ dek, keyId, version, ...(aad ? { aad } : {}) }, plaintext, this.nonces).toString('base64'));
      reply = this.withDek(
        ref,
        'use',
        (dek, keyId, version) => {
          const counted = this.budget.take(keyId, version);
          if (counted === undefined) return sealWith(dek, keyId, version);
          // Rare: the stored reservation is being raised. The DEK is not held across the
          // wait (it may be evicted and zeroized); it is fetched again afterwards.
          return counted.then(() => this.withDek({ id: keyId, version }, 'use', sealWith));
        },
        trace,
      );
      return typeof reply === 'string' ? reply : reply.finally(() => zeroize(plaintext));
    } finally {
      // Synchronous outcomes (a hit, or an error) are done with the plaintext now.
      if (typeof reply !== 'object') zeroize(plaintext);
    }
  }

  private dec(ref: KeyRef, data: string, aadText: string | undefined, trace: RequestTrace | undefined): Reply {
    const envelope = decodeBase64(data, 'envelope');
    const aad = aadText === undefined ? undefined : decodeBase64(aadText, 'aad');
    const version = envelopeVersion(envelope);
    if (ref.version !== undefined && ref.version !== version) {
      throw new GatewayError('DECRYPT_FAILED', 'envelope was made with another key version');
    }
    return this.withDek({ id: ref.id, version }, 'decrypt', (dek, keyId) => {
      const plaintext = open({ dek, keyId, version, ...(aad ? { aad } : {}) }, envelope);
      try {
        return formatOk(plaintext.toString('base64'));
      } finally {
        zeroize(plaintext);
      }
    }, trace);
  }

  /**
   * Finds the DEK version `ref` names and runs `use` on its DEK, synchronously
   * on a cache hit. `use` must not keep the buffer: it may be zeroized later.
   */
  private withDek(
    ref: KeyRef,
    purpose: 'use' | 'decrypt',
    use: (dek: Buffer, keyId: string, version: number) => Reply,
    trace?: RequestTrace,
  ): Reply {
    const record = this.store.get(ref.id);
    if (record === undefined) {
      if (purpose === 'use' && this.options.autoCreate && ref.version === undefined) {
        return this.ensureKey(ref.id).then(() => this.withDek(ref, purpose, use, trace));
      }
      throw new GatewayError('NOT_FOUND', 'no such key');
    }
    const version = this.pickVersion(record, ref, purpose);
    if (trace) trace.version = version;
    const hit = this.cache.peek(ref.id, version);
    if (hit !== undefined) return use(hit, ref.id, version);
    return this.cache.acquire(ref.id, version).then((dek) => use(dek, ref.id, version));
  }

  private pickVersion(record: KeyRecord, ref: KeyRef, purpose: 'use' | 'decrypt'): number {
    if (ref.version === undefined) {
      const newest = newestEnabled(record);
      if (newest === undefined) throw new GatewayError('NOT_FOUND', 'key has no usable version');
      return newest.version;
    }
    const found = findVersion(record, ref.version);
    if (found === undefined) throw new GatewayError('NOT_FOUND', 'no such key version');
    if (found.state === 'destroyed') {
      throw purpose === 'decrypt'
        ? new GatewayError('DECRYPT_FAILED', 'key version was destroyed')
        : new GatewayError('NOT_FOUND', 'key version was destroyed');
    }
    return found.version;
  }

  /** Unwraps one stored version and checks its commitment tag (the cache's loader). */
  private async unwrapVersion(keyId: string, version: number): Promise<Buffer> {
    const record = this.store.get(keyId);
    const stored = record && findVersion(record, version);
    if (!stored || stored.state !== 'enabled' || stored.wrapped === null || stored.commit === null) {
      throw new GatewayError('NOT_FOUND', 'no such key version');
    }
    const wrapper = await this.adapters.get(stored.kek);
    const blob = Buffer.from(stored.wrapped, 'base64');
    const dek = await wrapper.unwrap(
      stored.kekVersion === undefined ? { blob } : { blob, kekVersion: stored.kekVersion },
      { keyId, version },
    );
    if (!verifyCommitTag(dek, keyId, version, Buffer.from(stored.commit, 'base64'))) {
      zeroize(dek);
      this.log.error({ keyId, version }, 'stored DEK failed its commitment check: blob swapped or corrupted');
      throw new GatewayError('DECRYPT_FAILED', 'stored key failed its commitment check');
    }
    return dek;
  }

  // --- administration --------------------------------------------------------

  /** Creates `keyId` with version 1 under `kek` (or the default KEK). */
  create(keyId: string, kek?: string, trace?: RequestTrace): Promise<number> {
    const chosen = kek ?? this.options.defaultKek;
    if (trace) trace.kek = chosen;
    return this.exclusive(keyId, async () => {
      if (this.store.get(keyId) !== undefined) throw new GatewayError('EXISTS', 'key already exists');
      const now = new Date().toISOString();
      const first = await this.newVersion(keyId, 1, chosen, now);
      await this.commitVersion({ format: 1, id: keyId, created: now, versions: [first.record] }, first);
      this.log.info({ keyId, version: 1, kek: first.record.kek }, 'key created');
      return 1;
    });
  }

  /** Adds a DEK version; ENC then uses it, DEC still reads the older ones. */
  rotate(keyId: string, kek?: string, trace?: RequestTrace): Promise<number> {
    return this.exclusive(keyId, async () => {
      const record = this.store.get(keyId);
      if (record === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
      const last = record.versions[record.versions.length - 1] as VersionRecord;
      if (last.version >= 0xffff_ffff) throw new GatewayError('BAD_REQUEST', 'key has used every version number');
      const version = last.version + 1;
      const chosen = kek ?? (newestEnabled(record) ?? last).kek;
      if (trace) trace.kek = chosen;
      const made = await this.newVersion(keyId, version, chosen, new Date().toISOString());
      await this.commitVersion({ ...record, versions: [...record.versions, made.record] }, made);
      this.log.info({ keyId, version, kek: made.record.kek }, 'key rotated');
      return version;
    });
  }

  /**
   * Moves enabled versions (all, or the one given) under another KEK. Inside one
   * KMS the blob is re-encrypted there (the DEK never leaves it); across KMSs the
   * DEK is unwrapped and wrapped. Each new blob is unwrapped once and checked
   * against the commitment tag before anything is stored, so a failed rewrap
   * leaves the key as it was. Resolves with the number of versions moved.
   */
  rewrap(keyId: string, kek: string, version?: number): Promise<number> {
    return this.exclusive(keyId, async () => {
      const record = this.store.get(keyId);
      if (record === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
      const targets = record.versions.filter(
        (v) => v.state === 'enabled' && (version === undefined || v.version === version) && v.kek !== kek,
      );
      if (version !== undefined && findVersion(record, version)?.state !== 'enabled') {
        throw new GatewayError('NOT_FOUND', 'no such key version');
      }
      this.adapters.assertSupported(kek);
      const to = await this.adapters.get(kek);
      const moved = new Map<number, VersionRecord>();
      for (const v of targets) {
        const ctx = { keyId, version: v.version };
        const from = await this.adapters.get(v.kek);
        const stored = { blob: Buffer.from(v.wrapped as string, 'base64'), ...(v.kekVersion ? { kekVersion: v.kekVersion } : {}) };
        let wrapped = await from.rewrap(stored, ctx, to);
        if (wrapped === undefined) {
          const dek = await from.unwrap(stored, ctx);
          try {
            wrapped = await to.wrap(dek, ctx);
          } finally {
            zeroize(dek);
          }
        }
        const check = await to.unwrap(wrapped, ctx);
        const sound = verifyCommitTag(check, keyId, v.version, Buffer.from(v.commit as string, 'base64'));
        zeroize(check);
        if (!sound) throw new GatewayError('INTERNAL', 'rewrapped key failed its commitment check; nothing was changed');
        const { kekVersion: _old, ...rest } = v;
        moved.set(v.version, {
          ...rest,
          kek,
          wrapped: wrapped.blob.toString('base64'),
          ...(wrapped.kekVersion === undefined ? {} : { kekVersion: wrapped.kekVersion }),
        });
      }
      if (moved.size > 0) {
        await this.store.put({ ...record, versions: record.versions.map((v) => moved.get(v.version) ?? v) });
        this.log.info({ keyId, versions: [...moved.keys()], kek }, 'key rewrapped');
      }
      return moved.size;
    });
  }

  /** Forgets one old version's wrapped DEK for good; its envelopes become undecryptable. */
  destroy(keyId: string, version: number): Promise<number> {
    return this.exclusive(keyId, async () => {
      const record = this.store.get(keyId);
      const target = record && findVersion(record, version);
      if (!record || !target) throw new GatewayError('NOT_FOUND', 'no such key version');
      if (target.state === 'destroyed') return version;
      if (newestEnabled(record) === target) {
        throw new GatewayError('BAD_REQUEST', 'the newest version cannot be destroyed; ROTATE first');
      }
      const destroyed: VersionRecord = {
        ...target,
        wrapped: null,
        commit: null,
        state: 'destroyed',
        destroyed: new Date().toISOString(),
      };
      await this.store.put({ ...record, versions: record.versions.map((v) => (v === target ? destroyed : v)) });
      this.cache.evict(keyId, version);
      this.log.info({ keyId, version }, 'key version destroyed');
      return version;
    });
  }

  /** Metadata only: never a wrapped or unwrapped key. */
  info(keyId: string): object {
    const record = this.store.get(keyId);
    if (record === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
    const newest = newestEnabled(record);
    return {
      id: record.id,
      created: record.created,
      state: newest ? 'enabled' : 'destroyed',
      primary: newest?.version ?? null,
      versions: record.versions.map((v) => ({
        version: v.version,
        kek: v.kek,
        ...(v.kekVersion === undefined ? {} : { kekVersion: v.kekVersion }),
        created: v.created,
        state: v.state,
        ...(v.destroyed === undefined ? {} : { destroyed: v.destroyed }),
        // An upper bound: ENC calls are reserved a block at a time.
        ...(v.encryptions === undefined ? {} : { encryptionsReserved: v.encryptions }),
      })),
    };
  }

  /** Creates a key on first use, once however many requests race for it. */
  private ensureKey(keyId: string): Promise<void> {
    return this.exclusive(keyId, async () => {
      if (this.store.get(keyId) !== undefined) return;
      const now = new Date().toISOString();
      const first = await this.newVersion(keyId, 1, this.options.defaultKek, now);
      await this.commitVersion({ format: 1, id: keyId, created: now, versions: [first.record] }, first);
      this.log.info({ keyId, version: 1, kek: first.record.kek }, 'key created on first use');
    });
  }

  private async newVersion(
    keyId: string,
    version: number,
    kek: string,
    created: string,
  ): Promise<{ record: VersionRecord; dek: Buffer }> {
    this.adapters.assertSupported(kek);
    const wrapper = await this.adapters.get(kek);
    let dek: Buffer | undefined;
    try {
      let wrapped;
      if (wrapper.canGenerate) {
        const generated = await wrapper.generate({ keyId, version });
        dek = generated.dek;
        wrapped = generated;
      } else {
        dek = allocSecret();
        randomFillSync(dek);
        wrapped = await wrapper.wrap(dek, { keyId, version });
      }
      const record: VersionRecord = {
        version,
        kek,
        ...(wrapped.kekVersion === undefined ? {} : { kekVersion: wrapped.kekVersion }),
        wrapped: wrapped.blob.toString('base64'),
        commit: commitTag(dek, keyId, version).toString('base64'),
        created,
        state: 'enabled',
      };
      return { record, dek };
    } catch (err) {
      zeroize(dek);
      throw err;
    }
  }

  /** Persists, then hands the fresh DEK to the cache (or zeroizes it if the write failed). */
  private async commitVersion(record: KeyRecord, made: { record: VersionRecord; dek: Buffer }): Promise<void> {
    try {
      await this.store.put(record);
    } catch (err) {
      zeroize(made.dek);
      throw err;
    }
    this.cache.seed(record.id, made.record.version, made.dek);
  }

  private exclusive<T>(keyId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.keyLocks.get(keyId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(fn);
    this.keyLocks.set(keyId, next);
    void next
      .catch(() => undefined)
      .finally(() => {
        if (this.keyLocks.get(keyId) === next) this.keyLocks.delete(keyId);
      });
    return next;
  }
}
