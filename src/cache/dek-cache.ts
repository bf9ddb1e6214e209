import { LRUCache } from 'lru-cache';
import { GatewayError } from '../protocol/errors.js';
import { zeroize } from '../crypto/secret.js';

/** A clock in milliseconds, injectable so TTL tests never sleep. */
export interface Clock {
  now(): number;
}

/** Options for the DEK cache. */
export interface DekCacheOptions {
  /** Most unwrapped DEKs held at once; the least recently used is zeroized first. */
  readonly maxEntries: number;
  /** How long an unwrapped DEK stays, in ms, counted from its unwrap (not refreshed on use). */
  readonly ttlMs: number;
  /** Unwraps one DEK version; called once per cold key however many requests wait for it. */
  readonly load: (keyId: string, version: number) => Promise<Buffer>;
  /** Time source (default: `performance`). */
  readonly clock?: Clock;
}

/** Cache counters, for logs and the benchmark. */
export interface DekCacheStats {
  hits: number;
  misses: number;
  loads: number;
}

interface LoadContext {
  keyId: string;
  version: number;
}

// A DEK handed out by acquire() was valid when handed out; it may be evicted
// (and zeroized) later, so callers use it synchronously before any await.
const MAX_ACQUIRE_ATTEMPTS = 3;

/**
 * Unwrapped DEKs, LRU + TTL, zeroized on every way out (eviction, expiry,
 * delete, clear). Concurrent misses on one key share a single unwrap.
 */
export class DekCache {
  readonly stats: DekCacheStats = { hits: 0, misses: 0, loads: 0 };
  private readonly lru: LRUCache<string, Buffer, LoadContext>;

  constructor(options: DekCacheOptions) {
    this.lru = new LRUCache<string, Buffer, LoadContext>({
      max: options.maxEntries,
      ttl: options.ttlMs,
      ttlAutopurge: true,
      updateAgeOnGet: false,
      allowStale: false,
      // An unwrap that finishes after its entry was evicted is still cached,
      // so its Buffer reaches dispose() and is zeroized like any other.
      ignoreFetchAbort: true,
      // An injected clock is read on every check (lru-cache otherwise reuses a reading for 1 ms).
      ...(options.clock ? { perf: options.clock, ttlResolution: 0 } : {}),
      dispose: (value) => zeroize(value),
      fetchMethod: async (_key, _stale, { context }) => {
        this.stats.loads++;
        return options.load(context.keyId, context.version);
      },
    });
  }

  /** The cached DEK, or undefined on a miss. Use it before the next await. */
  peek(keyId: string, version: number): Buffer | undefined {
    const dek = this.lru.get(cacheKey(keyId, version));
    if (dek !== undefined) this.stats.hits++;
    return dek;
  }

  /** The DEK, unwrapping it on a miss. Use it before the next await. */
  async acquire(keyId: string, version: number): Promise<Buffer> {
    const hit = this.peek(keyId, version);
    if (hit !== undefined) return hit;
    this.stats.misses++;
    const key = cacheKey(keyId, version);
    for (let attempt = 0; attempt < MAX_ACQUIRE_ATTEMPTS; attempt++) {
      const dek = await this.lru.fetch(key, { context: { keyId, version } });
      // Evicted (so zeroized) between the unwrap and this continuation: load again.
      if (dek !== undefined && this.lru.peek(key, { allowStale: true }) === dek) return dek;
    }
    throw new GatewayError('INTERNAL', 'DEK cache is too small for the load; raise cache.maxEntries');
  }

  /** Takes ownership of a freshly made DEK so the next use needs no unwrap. */
  seed(keyId: string, version: number, dek: Buffer): void {
    this.lru.set(cacheKey(keyId, version), dek);
  }

  /** Drops (and zeroizes) one version. */
  evict(keyId: string, version: number): void {
    this.lru.delete(cacheKey(keyId, version));
  }

  get size(): number {
    return this.lru.size;
  }

  /** Drops and zeroizes everything (shutdown). */
  clear(): void {
    this.lru.clear();
  }
}

function cacheKey(keyId: string, version: number): string {
  return `${keyId}@${version}`;
}
