import { LRUCache } from 'lru-cache';
import { GatewayError, type ErrorCode } from '../protocol/errors.js';
import { registerDek, releaseDek } from '../crypto/aead.js';
import { zeroize } from '../crypto/secret.js';

/** A clock in milliseconds, injectable so TTL tests never sleep. */
export interface Clock {
  now(): number;
}

/** A DEK as its loader hands it over: the cache owns (and zeroizes) the buffer. */
export interface LoadedDek {
  readonly dek: Buffer;
  /** The KEKs its version is wrapped under, so a revoked KEK's DEKs can be found and zeroized at once. */
  readonly keks: readonly string[];
}

/** The settings that may change while the cache runs (`cache.*`). */
export interface DekCacheSettings {
  /** Most unwrapped DEKs held at once, stale ones included; the least recently used is zeroized first. */
  readonly maxEntries: number;
  /** How long an unwrapped DEK is served, in ms, counted from its unwrap (not refreshed on use). */
  readonly ttlMs: number;
  /**
   * How long past its TTL a DEK is still kept, in ms, to be served only when unwrapping it again
   * fails with `KMS_UNAVAILABLE` or `THROTTLED` (never after `KMS_DENIED`). 0: zeroized at its TTL.
   * @default 0
   */
  readonly staleIfErrorMs?: number;
}

/** Options for the DEK cache. */
export interface DekCacheOptions extends DekCacheSettings {
  /** Unwraps one DEK version; called once per cold key however many requests wait for it. */
  readonly load: (keyId: string, version: number) => Promise<LoadedDek>;
  /** Told each time a stale DEK is served because its unwrap failed with `code`. */
  readonly onStale?: (keyId: string, version: number, code: ErrorCode) => void;
  /** Time source (default: `performance`). */
  readonly clock?: Clock;
}

/** Cache counters, for metrics, logs and the benchmark. */
export interface DekCacheStats {
  hits: number;
  misses: number;
  loads: number;
  /** DEKs served past their TTL because the KMS was down or throttling. */
  staleServed: number;
}

interface Entry {
  readonly dek: Buffer;
  readonly keks: readonly string[];
  /**
   * How long the LRU keeps it past its TTL (`staleIfErrorMs` when it was stored): it is a hit
   * while more than this is left of the LRU's own TTL, then only served when a new unwrap fails.
   */
  readonly staleFor: number;
}

// A DEK handed out by acquire() was valid when handed out; it may be evicted
// (and zeroized) later, so callers use it synchronously before any await.
const MAX_ACQUIRE_ATTEMPTS = 3;

/**
 * Unwrapped DEKs, LRU + TTL, zeroized on every way out (eviction, expiry,
 * delete, clear). Concurrent misses on one key share a single unwrap. Past its
 * TTL a DEK is kept for `staleIfErrorMs` more, served only while the KMS cannot
 * be reached, and zeroized at once when its KEK is revoked (`evictKek`).
 */
export class DekCache {
  readonly stats: DekCacheStats = { hits: 0, misses: 0, loads: 0, staleServed: 0 };
  private lru: LRUCache<string, Entry>;
  private readonly loading = new Map<string, Promise<Buffer>>();
  // Filled by lru-cache on each peek with the entry's remaining TTL, read off the LRU's own
  // debounced clock: a hit reads no clock of its own (performance.now() costs ~0.1 µs here).
  private readonly status: LRUCache.Status<string, Entry> = {};
  private settings: Required<DekCacheSettings>;
  // Set while entries move to a resized LRU: the old one must not zeroize what the new one holds.
  private moving = false;

  constructor(private readonly options: DekCacheOptions) {
    this.settings = settingsOf(options);
    this.lru = this.makeLru(this.settings.maxEntries);
  }

  /** The DEK if cached and within its TTL, else undefined. Use it before the next await. */
  peek(keyId: string, version: number): Buffer | undefined {
    const status = this.status;
    const entry = this.lru.get(cacheKey(keyId, version), { status });
    if (entry === undefined || (status.remainingTTL ?? 0) <= entry.staleFor) return undefined;
    this.stats.hits++;
    return entry.dek;
  }

  /** The DEK, unwrapping it on a miss. Use it before the next await. */
  async acquire(keyId: string, version: number): Promise<Buffer> {
    const hit = this.peek(keyId, version);
    if (hit !== undefined) return hit;
    this.stats.misses++;
    const key = cacheKey(keyId, version);
    for (let attempt = 0; attempt < MAX_ACQUIRE_ATTEMPTS; attempt++) {
      let pending = this.loading.get(key);
      if (pending === undefined) {
        pending = this.load(key, keyId, version).finally(() => this.loading.delete(key));
        this.loading.set(key, pending);
      }
      const dek = await pending;
      // Evicted (so zeroized) between the unwrap and this continuation: load again.
      if (this.lru.peek(key)?.dek === dek) return dek;
    }
    throw new GatewayError('INTERNAL', 'DEK cache is too small for the load; raise cache.maxEntries');
  }

  /** Takes ownership of a freshly made DEK so the next use needs no unwrap. */
  seed(keyId: string, version: number, loaded: LoadedDek): void {
    this.put(keyId, version, loaded);
  }

  /** Drops (and zeroizes) one version. */
  evict(keyId: string, version: number): void {
    this.lru.delete(cacheKey(keyId, version));
  }

  /** Drops (and zeroizes) every DEK, fresh or stale, whose KEK list `revoked` condemns; returns how many. */
  evictWhere(revoked: (keks: readonly string[]) => boolean): number {
    const gone: string[] = [];
    this.lru.forEach((entry, key) => {
      if (revoked(entry.keks)) gone.push(key);
    });
    for (const key of gone) this.lru.delete(key);
    return gone.length;
  }

  /** The KEKs of the DEKs held now. */
  keks(): Set<string> {
    const keks = new Set<string>();
    this.lru.forEach((entry) => {
      for (const kek of entry.keks) keks.add(kek);
    });
    return keks;
  }

  /**
   * Applies new settings: TTLs to DEKs unwrapped from now on, a new size at once (the least
   * recently used DEKs past it are zeroized).
   */
  reconfigure(settings: DekCacheSettings): void {
    const next = settingsOf(settings);
    const resize = next.maxEntries !== this.settings.maxEntries;
    this.settings = next;
    if (!resize) return;
    const old = this.lru;
    const fresh = this.makeLru(next.maxEntries);
    // Least recently used first, so the new LRU keeps the same order and drops the oldest.
    for (const key of [...old.rkeys()]) {
      const entry = old.peek(key);
      if (entry !== undefined) fresh.set(key, entry, { ttl: Math.max(1, old.getRemainingTTL(key)) });
    }
    this.moving = true;
    try {
      old.clear();
    } finally {
      this.moving = false;
    }
    this.lru = fresh;
  }

  get size(): number {
    return this.lru.size;
  }

  /** Drops and zeroizes everything (shutdown). */
  clear(): void {
    this.lru.clear();
  }

  /** Unwraps into the cache; on a transient KMS failure serves the stale DEK if one is kept. */
  private async load(key: string, keyId: string, version: number): Promise<Buffer> {
    let loaded: LoadedDek;
    try {
      this.stats.loads++;
      loaded = await this.options.load(keyId, version);
    } catch (err) {
      const code = err instanceof GatewayError ? err.code : undefined;
      // A denied KEK's DEKs were evicted when the denial was seen, so none is found here.
      const stale = code === 'KMS_UNAVAILABLE' || code === 'THROTTLED' ? this.lru.peek(key) : undefined;
      if (stale === undefined) throw err;
      this.stats.staleServed++;
      this.options.onStale?.(keyId, version, code as ErrorCode);
      return stale.dek;
    }
    this.put(keyId, version, loaded);
    return loaded.dek;
  }

  private put(keyId: string, version: number, loaded: LoadedDek): void {
    const { ttlMs, staleIfErrorMs } = this.settings;
    registerDek(loaded.dek, keyId, version);
    this.lru.set(cacheKey(keyId, version), { ...loaded, staleFor: staleIfErrorMs }, { ttl: ttlMs + staleIfErrorMs });
  }

  private makeLru(max: number): LRUCache<string, Entry> {
    return new LRUCache<string, Entry>({
      max,
      ttl: this.settings.ttlMs + this.settings.staleIfErrorMs,
      ttlAutopurge: true,
      updateAgeOnGet: false,
      allowStale: false,
      // An injected clock is read on every check (lru-cache otherwise reuses a reading for 1 ms).
      ...(this.options.clock ? { perf: this.options.clock, ttlResolution: 0 } : {}),
      dispose: (entry) => {
        if (this.moving) return;
        releaseDek(entry.dek);
        zeroize(entry.dek);
      },
    });
  }
}

function settingsOf(s: DekCacheSettings): Required<DekCacheSettings> {
  return { maxEntries: s.maxEntries, ttlMs: s.ttlMs, staleIfErrorMs: s.staleIfErrorMs ?? 0 };
}

function cacheKey(keyId: string, version: number): string {
  return `${keyId}@${version}`;
}
