import type { AdapterRegistry } from '../../adapters/registry.js';
import { EncryptionBudget } from '../crypto/budget.js';
import { withSecrets } from '../crypto/secret.js';
import { findVersion, newestEnabled, type KeyRecord, type KeyStore, type VersionRecord } from '../keystore/types.js';
import type { Logger } from '../log/logger.js';
import { GatewayError } from '../protocol/errors.js';
import type { KeyRef } from '../protocol/parser.js';
import { matchesAny } from '../policy/glob.js';
import { wrappedOf, type DekService } from './dek-service.js';
import { describeKey, makeVersion, type KeyInfo } from './versions.js';

/** How keys are created and used. Defaults live in the config schema (`keys.*`). */
export interface KeyServiceOptions {
  /** Create a key on first GET or ENC of an unknown id (development). */
  readonly autoCreate: boolean;
  /** KEK URI for keys created without one. */
  readonly defaultKek: string;
  /**
   * KEK URI globs new DEK versions may be wrapped under (`keys.allowedKeks`).
   * @default [defaultKek]
   */
  readonly allowedKeks?: readonly string[];
  /** Most ENC calls per DEK version (NIST's bound for random 96-bit nonces is 2^32). */
  readonly maxEncryptionsPerVersion: number;
  /**
   * Encryptions reserved per key-store write.
   * @default the limit / 1024, between 1 and 65536 (a restart forfeits at most one block)
   */
  readonly encryptionReservationBlock?: number;
}

/** The configured KEK allow-list as a test (`keys.allowedKeks`, else just the default KEK). */
export function kekAllowList(options: Pick<KeyServiceOptions, 'defaultKek' | 'allowedKeks'>): (kek: string) => boolean {
  return matchesAny(options.allowedKeks ?? [options.defaultKek]);
}

/** What a request means to do with a version: `use` picks the newest, `decrypt` may read old ones. */
export type Purpose = 'use' | 'decrypt';

/** A version CREATE or ROTATE made, and the KEK that wrapped it (for the audit record). */
export interface MadeVersion {
  readonly version: number;
  readonly kek: string;
}

/**
 * Owns the key records and their lifecycle: CREATE, ROTATE, REWRAP, DESTROY,
 * creation on first use, and the per-version encryption budget. Every change
 * to one key id runs on that id's single promise chain, so versions are
 * allocated one at a time and the store sees one write per id at a time.
 */
export class KeyService {
  private readonly chains = new Map<string, Promise<unknown>>();
  private readonly budget: EncryptionBudget;
  private readonly kekAllowed: (kek: string) => boolean;

  constructor(
    private readonly store: KeyStore,
    private readonly adapters: AdapterRegistry,
    private readonly deks: DekService,
    private readonly options: KeyServiceOptions,
    private readonly log: Logger,
  ) {
    this.kekAllowed = kekAllowList(options);
    const limit = options.maxEncryptionsPerVersion;
    this.budget = new EncryptionBudget({
      limit,
      block: options.encryptionReservationBlock ?? Math.min(65_536, Math.max(1, Math.floor(limit / 1024))),
      reserved: (keyId, version) => {
        const record = this.store.get(keyId);
        return (record && findVersion(record, version)?.encryptions) ?? 0;
      },
      reserve: (keyId, version, upTo) => this.reserve(keyId, version, upTo),
      warn: (keyId, version, used, fraction) =>
        this.log.warn(
          { keyId, version, encryptions: used, limit, fraction },
          `DEK version has used ${Math.round(fraction * 100)} % of its encryption budget: ROTATE the key soon`,
        ),
    });
  }

  /**
   * The version `ref` names for `purpose`: synchronous for a known key, a
   * promise when the key is created on first use.
   */
  resolve(ref: KeyRef, purpose: Purpose): number | Promise<number> {
    const record = this.store.get(ref.id);
    if (record !== undefined) return pickVersion(record, ref, purpose);
    if (purpose === 'use' && this.options.autoCreate && ref.version === undefined) {
      return this.ensure(ref.id).then(() => this.resolve(ref, purpose));
    }
    throw new GatewayError('NOT_FOUND', 'no such key');
  }

  /** Counts one ENC with a version; synchronous inside the stored reservation. */
  countEncryption(keyId: string, version: number): void | Promise<void> {
    return this.budget.take(keyId, version);
  }

  /** Creates `keyId` with version 1 under `kek` (or the default KEK). */
  create(keyId: string, kek: string = this.options.defaultKek): Promise<MadeVersion> {
    return this.exclusive(keyId, async () => {
      if (this.store.get(keyId) !== undefined) throw new GatewayError('EXISTS', 'key already exists');
      await this.addFirstVersion(keyId, kek);
      this.log.info({ keyId, version: 1, kek }, 'key created');
      return { version: 1, kek };
    });
  }

  /** Adds a DEK version; ENC then uses it, DEC still reads the older ones. */
  rotate(keyId: string, kek?: string): Promise<MadeVersion> {
    return this.exclusive(keyId, async () => {
      const record = this.existing(keyId);
      const last = record.versions[record.versions.length - 1] as VersionRecord;
      if (last.version >= 0xffff_ffff) throw new GatewayError('BAD_REQUEST', 'key has used every version number');
      const version = last.version + 1;
      const chosen = kek ?? (newestEnabled(record) ?? last).kek;
      await this.addVersion(record, version, chosen);
      this.log.info({ keyId, version, kek: chosen }, 'key rotated');
      return { version, kek: chosen };
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
      const record = this.existing(keyId);
      if (version !== undefined && findVersion(record, version)?.state !== 'enabled') {
        throw new GatewayError('NOT_FOUND', 'no such key version');
      }
      const targets = record.versions.filter(
        (v) => v.state === 'enabled' && (version === undefined || v.version === version) && v.kek !== kek,
      );
      this.assertUsable(kek);
      const moved = new Map<number, VersionRecord>();
      await this.adapters.use(kek, async (to) => {
        for (const v of targets) {
          const ctx = { keyId, version: v.version };
          const stored = wrappedOf(v);
          const wrapped = await this.adapters.use(
            v.kek,
            async (from) =>
              (await from.rewrap(stored, ctx, to)) ??
              (await withSecrets(async (scope) => to.wrap(scope.track(await from.unwrap(stored, ctx)), ctx))),
          );
          if (!(await this.deks.verify(to, wrapped, keyId, v.version, v.commit as string))) {
            throw new GatewayError('INTERNAL', 'rewrapped key failed its commitment check; nothing was changed');
          }
          const { kekVersion: _old, ...rest } = v;
          moved.set(v.version, {
            ...rest,
            kek,
            wrapped: wrapped.blob.toString('base64'),
            ...(wrapped.kekVersion === undefined ? {} : { kekVersion: wrapped.kekVersion }),
          });
        }
      });
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
      const destroyed: VersionRecord = { ...target, wrapped: null, commit: null, state: 'destroyed', destroyed: new Date().toISOString() };
      await this.store.put({ ...record, versions: record.versions.map((v) => (v === target ? destroyed : v)) });
      this.deks.evict(keyId, version);
      this.log.info({ keyId, version }, 'key version destroyed');
      return version;
    });
  }

  /** Metadata only: never a wrapped or unwrapped key. */
  info(keyId: string): KeyInfo {
    return describeKey(this.existing(keyId));
  }

  /** Key ids in sorted order, optionally only those starting with `prefix`. */
  list(prefix?: string): string[] {
    return this.store.list(prefix);
  }

  /** Resolves once every change under way has settled. */
  async drain(): Promise<void> {
    while (this.chains.size > 0) await Promise.allSettled([...this.chains.values()]);
  }

  /** Creates a key on first use, once however many requests race for it. */
  private ensure(keyId: string): Promise<void> {
    return this.exclusive(keyId, async () => {
      if (this.store.get(keyId) !== undefined) return;
      const kek = this.options.defaultKek;
      await this.addFirstVersion(keyId, kek);
      this.log.info({ keyId, version: 1, kek }, 'key created on first use');
    });
  }

  private addFirstVersion(keyId: string, kek: string): Promise<void> {
    return this.addVersion({ format: 1, id: keyId, created: new Date().toISOString(), versions: [] }, 1, kek);
  }

  /** Makes a DEK version under `kek`, stores it, then seeds the cache with it. */
  private addVersion(record: KeyRecord, version: number, kek: string): Promise<void> {
    this.assertUsable(kek);
    return withSecrets(async (scope) => {
      const made = await this.adapters.use(kek, (wrapper) => makeVersion(wrapper, scope, record.id, version, new Date().toISOString()));
      await this.store.put({ ...record, versions: [...record.versions, made.record] });
      this.deks.seed(record.id, version, made.dek);
    });
  }

  /**
   * Every KEK a DEK is newly wrapped under passes here: the configured allow-list (a client
   * must not make an arbitrary KMS key, or a file, the KEK), then a known scheme.
   */
  private assertUsable(kek: string): void {
    if (!this.kekAllowed(kek)) throw new GatewayError('FORBIDDEN', 'KEK not allowed');
    this.adapters.assertSupported(kek);
  }

  /** Durably raises a version's encryption reservation (the budget calls it a block ahead). */
  private reserve(keyId: string, version: number, upTo: number): Promise<void> {
    return this.exclusive(keyId, async () => {
      const record = this.existing(keyId);
      const versions = record.versions.map((v) => (v.version === version ? { ...v, encryptions: Math.max(v.encryptions ?? 0, upTo) } : v));
      await this.store.put({ ...record, versions });
    });
  }

  private existing(keyId: string): KeyRecord {
    const record = this.store.get(keyId);
    if (record === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
    return record;
  }

  private exclusive<T>(keyId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.chains.get(keyId) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(fn);
    this.chains.set(keyId, next);
    void next
      .catch(() => undefined)
      .finally(() => {
        if (this.chains.get(keyId) === next) this.chains.delete(keyId);
      });
    return next;
  }
}

function pickVersion(record: KeyRecord, ref: KeyRef, purpose: Purpose): number {
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
