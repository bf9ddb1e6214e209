import type { AdapterRegistry } from '../../adapters/registry.js';
import { EncryptionBudget, type Block } from '../crypto/budget.js';
import { withSecrets } from '../crypto/secret.js';
import { KeyedChains } from '../keystore/chains.js';
import type { KeyStore } from '../keystore/key-store.js';
import { findVersion, newestEnabled, type KeyRecord, type VersionRecord } from '../keystore/types.js';
import type { Logger } from '../log/logger.js';
import { GatewayError } from '../protocol/errors.js';
import type { KeyRef } from '../protocol/parser.js';
import { matchesAny } from '../policy/glob.js';
import type { DekService } from './dek-service.js';
import { rewrapVersions } from './rewrap.js';
import { describeKey, destroyedVersion, lastVersion, makeVersion, pickVersion, type KeyInfo, type Purpose } from './versions.js';

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
   * Encryptions claimed per key-store write (see `EncryptionBudget`).
   * @default the limit / 1024, between 1 and 65536 (a restart forfeits at most one block)
   */
  readonly encryptionReservationBlock?: number;
}

/** The configured KEK allow-list as a test (`keys.allowedKeks`, else just the default KEK). */
export function kekAllowList(options: Pick<KeyServiceOptions, 'defaultKek' | 'allowedKeks'>): (kek: string) => boolean {
  return matchesAny(options.allowedKeks ?? [options.defaultKek]);
}

export type { Purpose } from './versions.js';

/** A version CREATE or ROTATE made, and the KEK that wrapped it (for the audit record). */
export interface MadeVersion {
  readonly version: number;
  readonly kek: string;
}

/**
 * Owns the key records and their lifecycle: CREATE, ROTATE, REWRAP, DESTROY,
 * creation on first use, and the per-version encryption budget. Every change
 * to one key id runs on that id's single promise chain here, and is a
 * compare-and-swap in the store, so gateways sharing a store never lose each
 * other's changes: a change that loses a race is made again on the record that won.
 */
export class KeyService {
  private readonly chains = new KeyedChains();
  private readonly budget: EncryptionBudget;
  private readonly block: number;
  /** The block a new version is stored with, so its first ENCs need no write. */
  private readonly firstBlock: Block;
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
    this.block = options.encryptionReservationBlock ?? Math.min(65_536, Math.max(1, Math.floor(limit / 1024)));
    this.firstBlock = { from: 0, to: Math.min(this.block, limit) };
    this.budget = new EncryptionBudget({
      limit,
      block: this.block,
      reserve: (keyId, version, block) => this.reserve(keyId, version, block),
      warn: (keyId, version, used, fraction) =>
        this.log.warn(
          { keyId, version, encryptions: used, limit, fraction },
          `DEK version has used ${Math.round(fraction * 100)} % of its encryption budget: ROTATE the key soon`,
        ),
    });
  }

  /**
   * The version `ref` names for `purpose`: synchronous for a key in memory, a promise
   * when the record must be read, or created on first use. An id or a version this
   * gateway has not seen is looked up in the store (another gateway may just have made it)
   * before it is NOT_FOUND.
   */
  resolve(ref: KeyRef, purpose: Purpose): number | Promise<number> {
    const record = this.store.peek(ref.id);
    if (record !== undefined && (ref.version === undefined || findVersion(record, ref.version) !== undefined)) {
      return pickVersion(record, ref, purpose);
    }
    const read = record === undefined ? this.store.get(ref.id) : this.store.fetch(ref.id);
    return read.then((found) => {
      if (found !== undefined) return pickVersion(found, ref, purpose);
      if (purpose === 'use' && this.options.autoCreate && ref.version === undefined) {
        return this.ensure(ref.id).then((made) => pickVersion(made, ref, purpose));
      }
      throw new GatewayError('NOT_FOUND', 'no such key');
    });
  }

  /** Counts one ENC with a version; synchronous inside the stored reservation. */
  countEncryption(keyId: string, version: number): void | Promise<void> {
    return this.budget.take(keyId, version);
  }

  /** Creates `keyId` with version 1 under `kek` (or the default KEK). */
  create(keyId: string, kek: string = this.options.defaultKek): Promise<MadeVersion> {
    this.assertUsable(kek);
    return this.exclusive(keyId, async () => {
      await this.addVersion(keyId, kek, (current) => {
        if (current !== undefined) throw new GatewayError('EXISTS', 'key already exists');
        return 1;
      });
      this.log.info({ keyId, version: 1, kek }, 'key created');
      return { version: 1, kek };
    });
  }

  /** Adds a DEK version; ENC then uses it, DEC still reads the older ones. */
  rotate(keyId: string, kek?: string): Promise<MadeVersion> {
    if (kek !== undefined) this.assertUsable(kek);
    return this.exclusive(keyId, async () => {
      let chosen = kek;
      const { made: version } = await this.addVersion(
        keyId,
        (current) => (chosen = kek ?? (newestEnabled(current) ?? lastVersion(current)).kek),
        (current) => {
          if (current === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
          const last = lastVersion(current).version;
          if (last >= 0xffff_ffff) throw new GatewayError('BAD_REQUEST', 'key has used every version number');
          return last + 1;
        },
      );
      this.log.info({ keyId, version, kek: chosen }, 'key rotated');
      return { version: version as number, kek: chosen as string };
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
    this.assertUsable(kek);
    return this.exclusive(keyId, async () => {
      let moved = new Map<number, VersionRecord>();
      await this.store.update(keyId, async (record) => {
        if (record === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
        if (version !== undefined && findVersion(record, version)?.state !== 'enabled') {
          throw new GatewayError('NOT_FOUND', 'no such key version');
        }
        const targets = record.versions.filter(
          (v) => v.state === 'enabled' && (version === undefined || v.version === version) && v.kek !== kek,
        );
        moved = await rewrapVersions(this.adapters, this.deks, keyId, targets, kek);
        return moved.size === 0 ? undefined : { ...record, versions: record.versions.map((v) => moved.get(v.version) ?? v) };
      });
      if (moved.size > 0) this.log.info({ keyId, versions: [...moved.keys()], kek }, 'key rewrapped');
      return moved.size;
    });
  }

  /** Forgets one old version's wrapped DEK for good; its envelopes become undecryptable. */
  destroy(keyId: string, version: number): Promise<number> {
    return this.exclusive(keyId, async () => {
      await this.store.update(keyId, (record) => {
        const target = record && findVersion(record, version);
        if (!record || !target) throw new GatewayError('NOT_FOUND', 'no such key version');
        if (target.state === 'destroyed') return undefined;
        if (newestEnabled(record) === target) {
          throw new GatewayError('BAD_REQUEST', 'the newest version cannot be destroyed; ROTATE first');
        }
        return { ...record, versions: record.versions.map((v) => (v === target ? destroyedVersion(v) : v)) };
      });
      this.deks.evict(keyId, version);
      this.log.info({ keyId, version }, 'key version destroyed');
      return version;
    });
  }

  /** Metadata only: never a wrapped or unwrapped key. */
  async info(keyId: string): Promise<KeyInfo & { store: string }> {
    const record = await this.store.get(keyId);
    if (record === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
    return { ...describeKey(record), store: this.store.location };
  }

  /** Key ids in sorted order, optionally only those starting with `prefix`. */
  list(prefix?: string): Promise<string[]> {
    return this.store.list(prefix);
  }

  /** Resolves once every change under way has settled. */
  async drain(): Promise<void> {
    await this.chains.drain();
  }

  /**
   * Creates a key on first use, once however many requests (and gateways) race for it:
   * the create is create-only in the store, so every racer ends up with the one that won.
   */
  private ensure(keyId: string): Promise<KeyRecord> {
    const kek = this.options.defaultKek;
    this.assertUsable(kek);
    return this.exclusive(keyId, async () => {
      const { record, made } = await this.addVersion(keyId, kek, (current) => (current === undefined ? 1 : undefined));
      if (made !== undefined) this.log.info({ keyId, version: 1, kek }, 'key created on first use');
      return record;
    });
  }

  /**
   * Makes a DEK version under `kek` and stores it with a compare-and-swap, making it again
   * (with the number `next` then gives) if another writer changed the record meanwhile.
   * `next` returns undefined to leave the record alone. The new version comes with its first
   * block of the encryption budget, and its DEK seeds the cache. Resolves with the stored
   * record and the version made, if one was.
   */
  private addVersion(
    keyId: string,
    kek: string | ((current: KeyRecord) => string),
    next: (current: KeyRecord | undefined) => number | undefined,
  ): Promise<{ record: KeyRecord; made: number | undefined }> {
    return withSecrets(async (scope) => {
      let made: { version: number; dek: Buffer; kek: string } | undefined;
      const record = await this.store.update(keyId, async (current) => {
        made = undefined;
        const version = next(current);
        if (version === undefined) return undefined;
        const base = current ?? { format: 1 as const, id: keyId, created: new Date().toISOString(), versions: [] };
        const wrapUnder = typeof kek === 'string' ? kek : kek(base);
        this.assertUsable(wrapUnder);
        const fresh = await this.adapters.use(wrapUnder, (wrapper) =>
          makeVersion(wrapper, scope, keyId, version, new Date().toISOString()),
        );
        made = { version, dek: fresh.dek, kek: wrapUnder };
        return { ...base, versions: [...base.versions, { ...fresh.record, encryptions: this.firstBlock.to }] };
      });
      if (record === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
      if (made === undefined) return { record, made: undefined };
      const { version, dek } = made;
      this.deks.seed(keyId, version, dek, made.kek);
      this.budget.grant(keyId, version, this.firstBlock);
      return { record, made: version };
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

  /**
   * Claims the next block of a version's encryption counter in the shared record. Gateways
   * sharing the store each claim their own, so together they stay under the one limit.
   */
  private reserve(keyId: string, version: number, block: number): Promise<Block | undefined> {
    return this.exclusive(keyId, async () => {
      let claimed: Block | undefined;
      await this.store.update(keyId, (record) => {
        claimed = undefined;
        const target = record && findVersion(record, version);
        if (!record || target?.state !== 'enabled') throw new GatewayError('NOT_FOUND', 'no such key version');
        const from = target.encryptions ?? 0;
        const to = Math.min(from + block, this.options.maxEncryptionsPerVersion);
        if (to <= from) return undefined;
        claimed = { from, to };
        return { ...record, versions: record.versions.map((v) => (v === target ? { ...v, encryptions: to } : v)) };
      });
      return claimed;
    });
  }

  private exclusive<T>(keyId: string, fn: () => Promise<T>): Promise<T> {
    return this.chains.run(keyId, fn);
  }
}
