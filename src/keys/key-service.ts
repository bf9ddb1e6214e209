/*
 * Over 300 lines because creation, rotation, destruction and the encryption budget's reservations
 * all add to or change a key's versions on the id's one chain and compare-and-swap loop; changes to
 * the KEK sets of existing versions already live in kek-sets.ts.
 */
import type { KekHealth } from '../../adapters/health.js';
import type { AdapterRegistry } from '../../adapters/registry.js';
import { EncryptionBudget, type Block } from '../crypto/budget.js';
import { withSecrets } from '../crypto/secret.js';
import { KeyedChains } from '../keystore/chains.js';
import type { KeyStore } from '../keystore/key-store.js';
import { findVersion, newestEnabled, RECORD_FORMAT, type KeyRecord } from '../keystore/types.js';
import type { Logger } from '../log/logger.js';
import { matchesAny } from '../policy/glob.js';
import { GatewayError } from '../protocol/errors.js';
import type { KeyRef } from '../protocol/parser.js';
import { sealForRecovery } from '../recovery/age.js';
import type { DekService } from './dek-service.js';
import { preferenceOrder } from './kek-order.js';
import { KekSets, type VersionTarget } from './kek-sets.js';
import { describeKey, destroyedVersion, keksOf, lastVersion, makeVersion, pickVersion, type KeyInfo, type Purpose } from './versions.js';

/** How keys are created and used. Defaults live in the config schema (`keys.*`). */
export interface KeyServiceOptions {
  /** Create a key on first GET or ENC of an unknown id (development). */
  readonly autoCreate: boolean;
  /** KEK URIs for keys created without any (`keys.defaultKek`; a list wraps each DEK under every one). */
  readonly defaultKeks: readonly string[];
  /**
   * KEK URI globs new DEK versions may be wrapped under (`keys.allowedKeks`).
   * @default defaultKeks
   */
  readonly allowedKeks?: readonly string[];
  /**
   * Fewest KEKs that must wrap a new version for it to be stored (`keys.minWraps`); the others
   * are retried in the background and shown as pending in INFO.
   * @default every KEK the version names
   */
  readonly minWraps?: number;
  /** age recipients every new DEK version is also sealed to (`keys.recovery`). @default none */
  readonly recovery?: readonly string[];
  /** KEK URI globs, most preferred first (`kms.preference`): the first that can generate makes new DEKs. @default [] */
  readonly preference?: readonly string[];
  /** Period of the background retry of pending wraps, in ms (0: only `ADDKEK` completes them). @default 0 */
  readonly pendingRetryMs?: number;
  /** What INFO reports of each KEK's state. */
  readonly health?: KekHealth;
  /** Most ENC calls per DEK version (NIST's bound for random 96-bit nonces is 2^32). */
  readonly maxEncryptionsPerVersion: number;
  /**
   * Encryptions claimed per key-store write (see `EncryptionBudget`).
   * @default the limit / 1024, between 1 and 65536 (a restart forfeits at most one block)
   */
  readonly encryptionReservationBlock?: number;
}

export { defaultKeks, kekAllowList } from './kek-order.js';
export type { Purpose } from './versions.js';

/** A version CREATE or ROTATE made, and the KEKs that wrapped it (for the audit record). */
export interface MadeVersion {
  readonly version: number;
  readonly keks: readonly string[];
}

/**
 * Owns the key records and their lifecycle: CREATE, ROTATE, REWRAP, the KEK set of each
 * version (ADDKEK, REMOVEKEK, pending wraps), recovery copies, DESTROY, creation on first
 * use, and the per-version encryption budget. Every change to one key id runs on that id's
 * single promise chain here, and is a compare-and-swap in the store, so gateways sharing a
 * store never lose each other's changes: a change that loses a race is made again on the
 * record that won.
 */
export class KeyService {
  private readonly chains = new KeyedChains();
  private readonly budget: EncryptionBudget;
  private readonly block: number;
  /** The block a new version is stored with, so its first ENCs need no write. */
  private readonly firstBlock: Block;
  private readonly kekAllowed: (kek: string) => boolean;
  private readonly preferred: (keks: readonly string[]) => string[];
  private readonly sets: KekSets;
  /** `keys.recovery`, changed by a reload. */
  private recovery: readonly string[];

  constructor(
    private readonly store: KeyStore,
    private readonly adapters: AdapterRegistry,
    private readonly deks: DekService,
    private readonly options: KeyServiceOptions,
    private readonly log: Logger,
  ) {
    this.kekAllowed = matchesAny(options.allowedKeks ?? options.defaultKeks);
    this.preferred = preferenceOrder(options.preference ?? []);
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
    this.recovery = options.recovery ?? [];
    this.sets = new KekSets(store, adapters, deks, this.chains, log, options.pendingRetryMs ?? 0);
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

  /** Creates `keyId` with version 1 under `keks` (or the default KEKs). */
  create(keyId: string, keks: readonly string[] = this.options.defaultKeks): Promise<MadeVersion> {
    this.assertUsable(keks);
    return this.exclusive(keyId, async () => {
      await this.addVersion(keyId, keks, (current) => {
        if (current !== undefined) throw new GatewayError('EXISTS', 'key already exists');
        return 1;
      });
      this.log.info({ keyId, version: 1, keks }, 'key created');
      return { version: 1, keks };
    });
  }

  /** Adds a DEK version (under `keks`, else the newest version's KEKs); ENC then uses it, DEC still reads the older ones. */
  rotate(keyId: string, keks?: readonly string[]): Promise<MadeVersion> {
    if (keks !== undefined) this.assertUsable(keks);
    return this.exclusive(keyId, async () => {
      let chosen = keks;
      const { made: version } = await this.addVersion(
        keyId,
        (current) => (chosen = keks ?? keksOf(newestEnabled(current) ?? lastVersion(current))),
        (current) => {
          if (current === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
          const last = lastVersion(current).version;
          if (last >= 0xffff_ffff) throw new GatewayError('BAD_REQUEST', 'key has used every version number');
          return last + 1;
        },
      );
      this.log.info({ keyId, version, keks: chosen }, 'key rotated');
      return { version: version as number, keks: chosen as readonly string[] };
    });
  }

  /** Wraps enabled versions (all, or the one given) under exactly `keks` (see `KekSets.rewrap`). */
  rewrap(keyId: string, keks: readonly string[], version?: number): Promise<number> {
    this.assertUsable(keks);
    return this.sets.rewrap(keyId, keks, version);
  }

  /** Adds KEKs to versions (see `KekSets.addKek`). */
  addKek(keyId: string, keks: readonly string[], target: VersionTarget = {}): Promise<number> {
    this.assertUsable(keks);
    return this.sets.addKek(keyId, keks, target);
  }

  /** Removes KEKs from versions; a version keeps at least one. */
  removeKek(keyId: string, keks: readonly string[], target: VersionTarget = {}): Promise<number> {
    return this.sets.removeKek(keyId, keks, target);
  }

  /** Seals every enabled version to `keys.recovery` that is not sealed to exactly those recipients yet. */
  addRecovery(keyId: string): Promise<number> {
    return this.sets.addRecovery(keyId, this.recovery);
  }

  /** Makes the pending wraps (`keys.minWraps`) of the versions this gateway knows of. */
  completePending(): Promise<number> {
    return this.sets.completePending();
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

  /**
   * Adds a version under the default KEKs whose record `fill` completes from the new DEK, in
   * the same compare-and-swap: a KV v2 secret version is stored with its value sealed under its
   * own DEK, or not at all. `next` numbers the version from the current record, or throws.
   */
  append(
    keyId: string,
    next: (current: KeyRecord | undefined) => number,
    fill: (record: KeyRecord, version: number, dek: Buffer) => KeyRecord,
  ): Promise<MadeVersion> {
    const keks = this.options.defaultKeks;
    this.assertUsable(keks);
    return this.exclusive(keyId, async () => {
      const { made } = await this.addVersion(keyId, keks, next, fill);
      return { version: made as number, keks };
    });
  }

  /**
   * Destroys every version at once (crypto-shred: no wrapped DEK, recovery copy or sealed
   * value is left) and lets `mark` note it in the record. Resolves with the versions destroyed.
   */
  shred(keyId: string, mark: (record: KeyRecord) => KeyRecord): Promise<number> {
    return this.exclusive(keyId, async () => {
      let destroyed: number[] = [];
      await this.store.update(keyId, (record) => {
        if (!record) throw new GatewayError('NOT_FOUND', 'no such key');
        destroyed = record.versions.filter((v) => v.state === 'enabled').map((v) => v.version);
        return mark({ ...record, versions: record.versions.map((v) => (v.state === 'enabled' ? destroyedVersion(v) : v)) });
      });
      for (const version of destroyed) this.deks.evict(keyId, version);
      this.log.info({ keyId, versions: destroyed }, 'every key version destroyed');
      return destroyed.length;
    });
  }

  /** Seals versions made from now on to these age recipients (a reload of `keys.recovery`). */
  setRecovery(recipients: readonly string[]): void {
    this.recovery = [...recipients];
  }

  /** Metadata only: never a wrapped or unwrapped key. */
  async info(keyId: string): Promise<KeyInfo & { store: string }> {
    const record = await this.store.get(keyId);
    if (record === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
    const seen = { ledger: this.deks.ledger, ...(this.options.health ? { health: this.options.health } : {}) };
    return { ...describeKey(record, seen), store: this.store.location };
  }

  /** Key ids in sorted order, optionally only those starting with `prefix`. */
  list(prefix?: string): Promise<string[]> {
    return this.store.list(prefix);
  }

  /** Resolves once every change under way has settled; stops the pending-wrap retries. */
  async drain(): Promise<void> {
    this.sets.stop();
    await this.chains.drain();
  }

  /**
   * Creates a key on first use, once however many requests (and gateways) race for it:
   * the create is create-only in the store, so every racer ends up with the one that won.
   */
  private ensure(keyId: string): Promise<KeyRecord> {
    const keks = this.options.defaultKeks;
    this.assertUsable(keks);
    return this.exclusive(keyId, async () => {
      const { record, made } = await this.addVersion(keyId, keks, (current) => (current === undefined ? 1 : undefined));
      if (made !== undefined) this.log.info({ keyId, version: 1, keks }, 'key created on first use');
      return record;
    });
  }

  /**
   * Makes a DEK version under `keks` and stores it with a compare-and-swap, making it again
   * (with the number `next` then gives) if another writer changed the record meanwhile.
   * `next` returns undefined to leave the record alone. The new version comes with its first
   * block of the encryption budget and its recovery copy, and its DEK seeds the cache.
   * Resolves with the stored record and the version made, if one was.
   */
  private addVersion(
    keyId: string,
    keks: readonly string[] | ((current: KeyRecord) => readonly string[]),
    next: (current: KeyRecord | undefined) => number | undefined,
    fill?: (record: KeyRecord, version: number, dek: Buffer) => KeyRecord,
  ): Promise<{ record: KeyRecord; made: number | undefined }> {
    return withSecrets(async (scope) => {
      let made: { version: number; dek: Buffer; keks: readonly string[] } | undefined;
      const record = await this.store.update(keyId, async (current) => {
        made = undefined;
        const version = next(current);
        if (version === undefined) return undefined;
        const base =
          current === undefined ? { format: RECORD_FORMAT, id: keyId, created: new Date().toISOString(), versions: [] } : current;
        const wrapUnder = typeof keks === 'function' ? keks(base) : keks;
        this.assertUsable(wrapUnder);
        const fresh = await makeVersion(this.adapters, scope, keyId, version, {
          keks: wrapUnder,
          preferred: this.preferred(wrapUnder),
          minWraps: this.options.minWraps ?? wrapUnder.length,
          created: new Date().toISOString(),
          verify: (kek, wrapped, commit) => this.adapters.use(kek, (w) => this.deks.verify(w, wrapped, keyId, version, commit)),
        });
        const recipients = this.recovery;
        const recovery = recipients.length > 0 ? { recovery: await sealForRecovery(fresh.dek, recipients) } : {};
        made = { version, dek: fresh.dek, keks: fresh.record.wraps.map((w) => w.kek) };
        const added = { ...base, versions: [...base.versions, { ...fresh.record, ...recovery, encryptions: this.firstBlock.to }] };
        return fill === undefined ? added : fill(added, version, fresh.dek);
      });
      if (record === undefined) throw new GatewayError('NOT_FOUND', 'no such key');
      if (made === undefined) return { record, made: undefined };
      const { version, dek } = made;
      if (findVersion(record, version)?.pending !== undefined) {
        this.sets.notePending(keyId);
        this.log.warn(
          { keyId, version, pending: findVersion(record, version)?.pending },
          'DEK version stored with KEK wraps pending (keys.minWraps)',
        );
      }
      this.deks.seed(keyId, version, dek, made.keks);
      this.budget.grant(keyId, version, this.firstBlock);
      return { record, made: version };
    });
  }

  /**
   * Every KEK a DEK is newly wrapped under passes here: the configured allow-list (a client
   * must not make an arbitrary KMS key, or a file, the KEK), then a known scheme.
   */
  private assertUsable(keks: readonly string[]): void {
    for (const kek of keks) {
      if (!this.kekAllowed(kek)) throw new GatewayError('FORBIDDEN', 'KEK not allowed');
      this.adapters.assertSupported(kek);
    }
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
