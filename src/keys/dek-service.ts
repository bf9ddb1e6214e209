import type { KekHealth } from '../../adapters/health.js';
import type { AdapterRegistry } from '../../adapters/registry.js';
import type { WrappedKey } from '../../adapters/types.js';
import { DekCache, type Clock, type DekCacheSettings, type LoadedDek } from '../cache/dek-cache.js';
import { verifyCommitTag } from '../crypto/commit.js';
import { copySecret, withSecrets, type SecretScope } from '../crypto/secret.js';
import type { KeyStore } from '../keystore/key-store.js';
import { findVersion, type KeyRecord, type VersionRecord } from '../keystore/types.js';
import { LimitedWarnings } from '../log/limited.js';
import type { Logger } from '../log/logger.js';
import { GatewayError } from '../protocol/errors.js';

/** How unwrapped DEKs are kept. Defaults live in the config schema (`cache.*`). */
export interface DekServiceOptions extends DekCacheSettings {
  /** Time source for the TTL (tests inject one). */
  readonly clock?: Clock;
  /** Where KMS denials are learned; a denied KEK's DEKs are zeroized at once. */
  readonly health?: KekHealth;
}

/** A stale DEK served while the KMS is down is logged at most once per key in this many ms. */
const STALE_WARNING_INTERVAL_MS = 60_000;

/** The stored blob of a version in the form adapters take. */
export function wrappedOf(v: VersionRecord): WrappedKey {
  const blob = Buffer.from(v.wrapped ?? '', 'base64');
  return v.kekVersion === undefined ? { blob } : { blob, kekVersion: v.kekVersion };
}

/** Something that unwraps one blob: a guarded adapter. */
interface Unwrapper {
  unwrap(wrapped: WrappedKey, ctx: { keyId: string; version: number }): Promise<Buffer>;
}

/**
 * Owns every unwrapped DEK: unwraps through the adapters, checks the
 * key-commitment tag, and keeps the result in the LRU+TTL cache, which
 * zeroizes it on every way out. Callers only ever borrow a DEK inside
 * `withDek`; they never hold one across an await.
 */
export class DekService {
  readonly cache: DekCache;
  private readonly health: KekHealth | undefined;

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
    // A version destroyed (here or by another gateway sharing the store) leaves the cache at once.
    store.watch((keyId, before, after) => this.evictGone(keyId, before, after));
    this.health = options.health;
    // Revocation wins: a denial, seen by any request or by the canary, zeroizes every DEK under that KEK.
    this.health?.onChange((now) => {
      if (now.state !== 'denied') return;
      const evicted = this.cache.evictKek(now.kek);
      this.log.warn(
        { kek: now.kek, code: now.code, evicted },
        'KEK denied by the KMS: its cached DEKs were zeroized, nothing under it is served',
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

  /**
   * Unwraps `wrapped` with `unwrapper` and tells whether the DEK matches the
   * stored commitment tag; the DEK itself never leaves this call.
   */
  verify(unwrapper: Unwrapper, wrapped: WrappedKey, keyId: string, version: number, commit: string): Promise<boolean> {
    return withSecrets(async (scope) => (await unwrapChecked(scope, unwrapper, wrapped, keyId, version, commit)) !== undefined);
  }

  /** Hands the cache a copy of a DEK just made under `kek`, so its first use needs no unwrap. */
  seed(keyId: string, version: number, dek: Buffer, kek: string): void {
    // Not while the KMS denies the KEK: only a successful unwrap lifts a denial.
    if (this.health?.denied(kek) === true) return;
    this.cache.seed(keyId, version, { dek: copySecret(dek), kek });
  }

  /** Drops (and zeroizes) one version. */
  evict(keyId: string, version: number): void {
    this.cache.evict(keyId, version);
  }

  /** Evicts the versions enabled in `before` that `after` no longer has enabled. */
  private evictGone(keyId: string, before: KeyRecord | undefined, after: KeyRecord | undefined): void {
    for (const v of before?.versions ?? []) {
      if (v.state === 'enabled' && (after === undefined || findVersion(after, v.version)?.state !== 'enabled')) {
        this.cache.evict(keyId, v.version);
      }
    }
  }

  /** Zeroizes every cached DEK. */
  close(): void {
    this.cache.clear();
  }

  /** The cache's loader: one stored version, unwrapped and checked against its commitment tag. */
  private async load(keyId: string, version: number): Promise<LoadedDek> {
    const record = await this.store.get(keyId);
    const stored = record && findVersion(record, version);
    if (!stored || stored.state !== 'enabled' || stored.wrapped === null || stored.commit === null) {
      throw new GatewayError('NOT_FOUND', 'no such key version');
    }
    const commit = stored.commit;
    return withSecrets(async (scope) => {
      const dek = await this.adapters.use(stored.kek, (wrapper) =>
        unwrapChecked(scope, wrapper, wrappedOf(stored), keyId, version, commit),
      );
      if (dek === undefined) {
        this.log.error({ keyId, version }, 'stored DEK failed its commitment check: blob swapped or corrupted');
        throw new GatewayError('DECRYPT_FAILED', 'stored key failed its commitment check');
      }
      // The cache owns its own copy; the scope zeroizes the adapter's.
      return { dek: copySecret(dek), kek: stored.kek };
    });
  }
}

/** Unwraps into `scope` and returns the DEK if it matches the stored commitment tag, else undefined. */
async function unwrapChecked(
  scope: SecretScope,
  unwrapper: Unwrapper,
  wrapped: WrappedKey,
  keyId: string,
  version: number,
  commit: string,
): Promise<Buffer | undefined> {
  const dek = scope.track(await unwrapper.unwrap(wrapped, { keyId, version }));
  return verifyCommitTag(dek, keyId, version, Buffer.from(commit, 'base64')) ? dek : undefined;
}
