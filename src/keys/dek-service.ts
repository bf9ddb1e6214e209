import type { KekHealth } from '../../adapters/health.js';
import type { AdapterRegistry } from '../../adapters/registry.js';
import type { WrappedKey } from '../../adapters/types.js';
import { DekCache, type Clock, type DekCacheSettings, type LoadedDek } from '../cache/dek-cache.js';
import { verifyCommitTag } from '../crypto/commit.js';
import { copySecret, withSecrets, zeroize, type SecretScope } from '../crypto/secret.js';
import type { KeyStore } from '../keystore/key-store.js';
import { findVersion, type KeyRecord, type Wrap } from '../keystore/types.js';
import { LimitedWarnings } from '../log/limited.js';
import type { Logger } from '../log/logger.js';
import { GatewayError } from '../protocol/errors.js';
import { raceUnwrap, realSchedule, type Schedule } from './failover.js';
import { preferenceOrder, REVOCATION_MODES, UnwrapLedger, type RevocationMode } from './kek-order.js';

export { REVOCATION_MODES, type RevocationMode };

/** How unwrapped DEKs are kept and unwrapped. Defaults live in the config schema (`cache.*`, `kms.*`). */
export interface DekServiceOptions extends DekCacheSettings {
  /** Time source for the TTL (tests inject one). */
  readonly clock?: Clock;
  /** Where KMS denials are learned; a denied KEK's DEKs are zeroized at once. */
  readonly health?: KekHealth;
  /**
   * How long one KEK may take before the next KEK of the version is also asked, in ms.
   * @default 250
   */
  readonly hedgeMs?: number;
  /**
   * KEK URI globs, most preferred first (`kms.preference`): unwraps ask matching KEKs first.
   * @default [] (the order the version lists them)
   */
  readonly preference?: readonly string[];
  /**
   * `any`: a denial of any KEK of a version stops that version being served until the KEK unwraps
   * again or is removed from it; `all`: served while any of its KEKs unwraps.
   * @default 'any'
   */
  readonly revocation?: RevocationMode;
  /** Starts the hedge timer (tests inject one). @default setTimeout */
  readonly schedule?: Schedule;
}

/** A stale DEK served while the KMS is down is logged at most once per key in this many ms. */
const STALE_WARNING_INTERVAL_MS = 60_000;

/** One stored wrap in the form adapters take. */
export function wrappedOf(w: Wrap): WrappedKey {
  const blob = Buffer.from(w.wrapped, 'base64');
  return w.kekVersion === undefined ? { blob } : { blob, kekVersion: w.kekVersion };
}

/** Something that unwraps one blob: a guarded adapter. */
interface Unwrapper {
  unwrap(wrapped: WrappedKey, ctx: { keyId: string; version: number; signal?: AbortSignal }): Promise<Buffer>;
}

/**
 * Owns every unwrapped DEK: unwraps through the adapters (asking a version's KEKs in
 * preference order, hedged), checks the key-commitment tag whichever KEK answered, and keeps
 * the result in the LRU+TTL cache, which zeroizes it on every way out. Callers only ever
 * borrow a DEK inside `withDek`; they never hold one across an await.
 */
export class DekService {
  readonly cache: DekCache;
  /** The last unwrap of each (version, KEK), for INFO. */
  readonly ledger: UnwrapLedger;
  private readonly health: KekHealth | undefined;
  private readonly order: (keks: readonly string[]) => string[];
  private readonly revocation: RevocationMode;
  private readonly hedgeMs: number;
  private readonly schedule: Schedule;

  constructor(
    private readonly store: Pick<KeyStore, 'get' | 'watch'>,
    private readonly adapters: AdapterRegistry,
    options: DekServiceOptions,
    private readonly log: Logger,
  ) {
    const staleWarnings = new LimitedWarnings(log, STALE_WARNING_INTERVAL_MS);
    this.cache = new DekCache({
      maxEntries: options.maxEntries,
      ttlMs: options.ttlMs,
      ...(options.staleIfErrorMs !== undefined ? { staleIfErrorMs: options.staleIfErrorMs } : {}),
      ...(options.clock ? { clock: options.clock } : {}),
      load: (keyId, version) => this.load(keyId, version),
      onStale: (keyId, version, code) =>
        staleWarnings.warn(
          keyId,
          { keyId, version, code },
          'serving a DEK past its TTL: the KMS cannot be reached to unwrap it again (cache.staleIfErrorMs)',
        ),
    });
    this.ledger = new UnwrapLedger(options.maxEntries);
    this.order = preferenceOrder(options.preference ?? []);
    this.revocation = options.revocation ?? 'any';
    this.hedgeMs = options.hedgeMs ?? 250;
    this.schedule = options.schedule ?? realSchedule;
    // A version destroyed (here or by another gateway sharing the store) leaves the cache at once.
    store.watch((keyId, before, after) => this.evictGone(keyId, before, after));
    this.health = options.health;
    // Revocation wins: a denial, seen by any request or by the canary, zeroizes every DEK it stops.
    this.health?.onChange((now) => {
      if (now.state !== 'denied') return;
      const evicted = this.cache.evictWhere((keks) => keks.includes(now.kek) && this.revoked(keks));
      this.log.warn(
        { kek: now.kek, code: now.code, evicted, revocation: this.revocation },
        'KEK denied by the KMS: the cached DEKs it revokes were zeroized and are not served',
      );
    });
  }

  /** Applies new `cache.*` settings (reload). */
  reconfigure(settings: DekCacheSettings): void {
    this.cache.reconfigure(settings);
  }

  /**
   * Unwraps one version into the cache ahead of use (warm-up); resolves when it is cached,
   * rejects with the error a request would have seen.
   */
  async warm(keyId: string, version: number): Promise<void> {
    await this.cache.acquire(keyId, version);
  }

  /**
   * Runs `use` with the DEK of an enabled version: synchronously on a cache
   * hit, after one shared unwrap on a miss. `use` must not keep the buffer.
   */
  withDek<T>(keyId: string, version: number, use: (dek: Buffer, version: number) => T | Promise<T>): T | Promise<T> {
    const hit = this.cache.peek(keyId, version);
    if (hit !== undefined) return use(hit, version);
    return this.cache.acquire(keyId, version).then((dek) => use(dek, version));
  }

  /** A copy of a version's DEK owned by `scope`, for work that awaits while it holds the DEK (wrapping, sealing). */
  async copyInto(scope: SecretScope, keyId: string, version: number): Promise<Buffer> {
    return this.withDek(keyId, version, (dek) => scope.track(copySecret(dek)));
  }

  /**
   * Unwraps `wrapped` with `unwrapper` and tells whether the DEK matches the
   * stored commitment tag; the DEK itself never leaves this call.
   */
  verify(unwrapper: Unwrapper, wrapped: WrappedKey, keyId: string, version: number, commit: string): Promise<boolean> {
    return withSecrets(async (scope) => {
      const dek = scope.track(await unwrapper.unwrap(wrapped, { keyId, version }));
      return verifyCommitTag(dek, keyId, version, Buffer.from(commit, 'base64'));
    });
  }

  /** Hands the cache a copy of a DEK just made under `keks`, so its first use needs no unwrap. */
  seed(keyId: string, version: number, dek: Buffer, keks: readonly string[]): void {
    // Not while a denial revokes it: only a successful unwrap lifts a denial.
    if (this.revoked(keks)) return;
    this.cache.seed(keyId, version, { dek: copySecret(dek), keks });
  }

  /** Drops (and zeroizes) one version. */
  evict(keyId: string, version: number): void {
    this.cache.evict(keyId, version);
  }

  /** Zeroizes every cached DEK. */
  close(): void {
    this.cache.clear();
  }

  /** Whether denials now stop a version wrapped under `keks` from being served (`kms.revocation`). */
  private revoked(keks: readonly string[]): boolean {
    const health = this.health;
    if (health === undefined || keks.length === 0) return false;
    return this.revocation === 'any' ? keks.some((k) => health.denied(k)) : keks.every((k) => health.denied(k));
  }

  /** Evicts the versions enabled in `before` that `after` no longer has enabled. */
  private evictGone(keyId: string, before: KeyRecord | undefined, after: KeyRecord | undefined): void {
    for (const v of before?.versions ?? []) {
      if (v.state === 'enabled' && (after === undefined || findVersion(after, v.version)?.state !== 'enabled')) {
        this.cache.evict(keyId, v.version);
      }
    }
  }

  /** The cache's loader: one stored version, unwrapped by the first of its KEKs to answer, checked against its commitment tag. */
  private async load(keyId: string, version: number): Promise<LoadedDek> {
    const record = await this.store.get(keyId);
    const stored = record && findVersion(record, version);
    if (!stored || stored.state !== 'enabled' || stored.wraps.length === 0 || stored.commit === null) {
      throw new GatewayError('NOT_FOUND', 'no such key version');
    }
    const commit = Buffer.from(stored.commit, 'base64');
    const byKek = new Map(stored.wraps.map((w) => [w.kek, w]));
    const keks = stored.wraps.map((w) => w.kek);
    const unwrap = (kek: string, signal: AbortSignal): Promise<Buffer> =>
      this.unwrapOne(keyId, version, byKek.get(kek) as Wrap, commit, signal);
    const denied = this.health === undefined ? [] : keks.filter((k) => this.health?.denied(k) === true);
    if (this.revocation === 'any' && denied.length > 0) {
      // Served again only once every denied KEK unwraps it (or is removed from the version); the
      // other KEKs are not asked meanwhile, whatever the denied one answers now.
      let last: Buffer | undefined;
      try {
        for (const kek of this.order(denied)) {
          zeroize(last);
          last = await unwrap(kek, new AbortController().signal);
        }
        return { dek: last as Buffer, keks };
      } catch (err) {
        zeroize(last);
        throw err;
      }
    }
    // Denied KEKs last (`all` mode): asked only when no other answers.
    const preferred = this.order(keks);
    const order = [...preferred.filter((k) => !denied.includes(k)), ...preferred.filter((k) => denied.includes(k))];
    const won = await raceUnwrap(
      order,
      unwrap,
      { hedgeMs: this.hedgeMs },
      { stopOn: (code) => this.revocation === 'any' && code === 'KMS_DENIED' },
      this.schedule,
    );
    return { dek: won.dek, keks };
  }

  /** Unwraps one wrap; resolves with a DEK the caller owns, already checked against the commitment tag. */
  private async unwrapOne(keyId: string, version: number, wrap: Wrap, commit: Buffer, signal: AbortSignal): Promise<Buffer> {
    let dek: Buffer | undefined;
    try {
      dek = await this.adapters.use(wrap.kek, (w) => w.unwrap(wrappedOf(wrap), { keyId, version, signal }));
    } catch (err) {
      this.ledger.record(keyId, version, wrap.kek, err);
      throw err;
    }
    if (!verifyCommitTag(dek, keyId, version, commit)) {
      zeroize(dek);
      this.log.error({ keyId, version, kek: wrap.kek }, 'stored DEK failed its commitment check: blob swapped or corrupted');
      const failed = new GatewayError('DECRYPT_FAILED', 'stored key failed its commitment check');
      this.ledger.record(keyId, version, wrap.kek, failed);
      throw failed;
    }
    this.ledger.record(keyId, version, wrap.kek, undefined);
    return dek;
  }
}
