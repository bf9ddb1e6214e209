import type { AdapterRegistry } from '../../adapters/registry.js';
import type { WrappedKey } from '../../adapters/types.js';
import { DekCache, type Clock } from '../cache/dek-cache.js';
import { verifyCommitTag } from '../crypto/commit.js';
import { copySecret, withSecrets, type SecretScope } from '../crypto/secret.js';
import type { KeyStore } from '../keystore/key-store.js';
import { findVersion, type KeyRecord, type VersionRecord } from '../keystore/types.js';
import type { Logger } from '../log/logger.js';
import { GatewayError } from '../protocol/errors.js';

/** How unwrapped DEKs are kept. Defaults live in the config schema (`cache.*`). */
export interface DekServiceOptions {
  /** Most unwrapped DEKs held at once; the least recently used is zeroized first. */
  readonly maxEntries: number;
  /** How long an unwrapped DEK stays, in ms from its unwrap. */
  readonly ttlMs: number;
  /** Time source for the TTL (tests inject one). */
  readonly clock?: Clock;
}

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

  constructor(
    private readonly store: Pick<KeyStore, 'get' | 'watch'>,
    private readonly adapters: AdapterRegistry,
    options: DekServiceOptions,
    private readonly log: Logger,
  ) {
    this.cache = new DekCache({
      maxEntries: options.maxEntries,
      ttlMs: options.ttlMs,
      ...(options.clock ? { clock: options.clock } : {}),
      load: (keyId, version) => this.load(keyId, version),
    });
    // A version destroyed (here or by another gateway sharing the store) leaves the cache at once.
    store.watch((keyId, before, after) => this.evictGone(keyId, before, after));
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

  /** Hands the cache a copy of a DEK just made, so its first use needs no unwrap. */
  seed(keyId: string, version: number, dek: Buffer): void {
    this.cache.seed(keyId, version, copySecret(dek));
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
  private async load(keyId: string, version: number): Promise<Buffer> {
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
      return copySecret(dek);
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
