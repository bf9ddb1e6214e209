import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DekCache } from '../../src/cache/dek-cache.js';
import { GatewayError } from '../../src/protocol/errors.js';

/** A controllable clock shared by the cache (lru-cache `perf`) and vitest's fake timers. */
function fakeClock() {
  return { now: () => Date.now() };
}

function dekFor(seed: number): Buffer {
  return Buffer.alloc(32, seed);
}

const KEK = 'fake://kek-1';

/** A loader result: the DEK under the test KEK. */
function loaded(dek: Buffer, kek = KEK) {
  return { dek, keks: [kek] };
}

describe('DekCache', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 1_000_000 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function makeCache(options: { max?: number; ttlMs?: number; staleIfErrorMs?: number } = {}) {
    const issued: Buffer[] = [];
    const load = vi.fn(async (keyId: string, version: number) => {
      const dek = dekFor(version);
      issued.push(dek);
      return loaded(dek, keyId.startsWith('other') ? 'fake://kek-2' : KEK);
    });
    const cache = new DekCache({
      maxEntries: options.max ?? 10,
      ttlMs: options.ttlMs ?? 300_000,
      ...(options.staleIfErrorMs !== undefined ? { staleIfErrorMs: options.staleIfErrorMs } : {}),
      clock: fakeClock(),
      load,
    });
    return { cache, load, issued };
  }

  it('a hit does not call the loader', async () => {
    const { cache, load } = makeCache();
    const first = await cache.acquire('k', 1);
    expect(first.equals(dekFor(1))).toBe(true);
    expect(load).toHaveBeenCalledTimes(1);
    const again = await cache.acquire('k', 1);
    expect(again).toBe(first);
    expect(cache.peek('k', 1)).toBe(first);
    expect(load).toHaveBeenCalledTimes(1);
    expect(cache.stats).toMatchObject({ loads: 1, misses: 1 });
    expect(cache.stats.hits).toBe(2);
  });

  it('expiry calls the loader again and zeroizes the expired buffer', async () => {
    const { cache, load } = makeCache({ ttlMs: 1000 });
    const first = await cache.acquire('k', 1);
    vi.advanceTimersByTime(999);
    expect(cache.peek('k', 1)).toBe(first);
    vi.advanceTimersByTime(2);
    expect(cache.peek('k', 1)).toBeUndefined();
    expect(first.equals(Buffer.alloc(32))).toBe(true);
    const second = await cache.acquire('k', 1);
    expect(second).not.toBe(first);
    expect(second.equals(dekFor(1))).toBe(true);
    expect(load).toHaveBeenCalledTimes(2);
  });

  it('TTL is counted from the unwrap, not refreshed by use', async () => {
    const { cache, load } = makeCache({ ttlMs: 1000 });
    await cache.acquire('k', 1);
    for (let i = 0; i < 9; i++) {
      vi.advanceTimersByTime(100);
      expect(cache.peek('k', 1)).toBeDefined();
    }
    vi.advanceTimersByTime(101);
    expect(cache.peek('k', 1)).toBeUndefined();
    expect(load).toHaveBeenCalledTimes(1);
  });

  it('autopurge zeroizes an expired entry even if nobody asks for it again', async () => {
    const { cache } = makeCache({ ttlMs: 500 });
    const dek = await cache.acquire('k', 7);
    vi.advanceTimersByTime(600);
    expect(dek.every((b) => b === 0)).toBe(true);
    expect(cache.size).toBe(0);
  });

  it('an LRU-evicted buffer is all zeros afterwards', async () => {
    const { cache } = makeCache({ max: 2 });
    const one = await cache.acquire('a', 1);
    const two = await cache.acquire('b', 2);
    cache.peek('a', 1); // a is now most recently used
    const three = await cache.acquire('c', 3);
    expect(two.every((b) => b === 0)).toBe(true);
    expect(one.equals(dekFor(1))).toBe(true);
    expect(three.equals(dekFor(3))).toBe(true);
    expect(cache.size).toBe(2);
  });

  it('100 concurrent cold acquires cause exactly one unwrap', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const load = vi.fn(async () => {
      await gate;
      return loaded(dekFor(9));
    });
    const cache = new DekCache({ maxEntries: 10, ttlMs: 1000, clock: fakeClock(), load });
    const all = Array.from({ length: 100 }, () => cache.acquire('cold', 1));
    release();
    const results = await Promise.all(all);
    expect(load).toHaveBeenCalledTimes(1);
    expect(new Set(results).size).toBe(1);
    expect(results[0]?.equals(dekFor(9))).toBe(true);
  });

  it('a failed unwrap is not cached and reaches every waiter', async () => {
    let fail = true;
    const load = vi.fn(async () => {
      if (fail) throw new Error('kms down');
      return loaded(dekFor(1));
    });
    const cache = new DekCache({ maxEntries: 10, ttlMs: 1000, clock: fakeClock(), load });
    const results = await Promise.allSettled([cache.acquire('k', 1), cache.acquire('k', 1)]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect(load).toHaveBeenCalledTimes(1);
    fail = false;
    expect((await cache.acquire('k', 1)).equals(dekFor(1))).toBe(true);
    expect(load).toHaveBeenCalledTimes(2);
  });

  it('seed() makes the next use a hit; evict() and clear() zeroize', async () => {
    const { cache, load } = makeCache();
    const seeded = dekFor(5);
    cache.seed('k', 5, loaded(seeded));
    expect(await cache.acquire('k', 5)).toBe(seeded);
    expect(load).not.toHaveBeenCalled();
    cache.evict('k', 5);
    expect(seeded.every((b) => b === 0)).toBe(true);
    const other = await cache.acquire('k', 6);
    cache.clear();
    expect(other.every((b) => b === 0)).toBe(true);
    expect(cache.size).toBe(0);
  });

  it('a value evicted while its unwrap was in flight is reloaded, never served zeroized', async () => {
    // max 1: the second key's load evicts the first before the first caller resumes.
    let releaseA!: () => void;
    const gateA = new Promise<void>((r) => (releaseA = r));
    const load = vi.fn(async (keyId: string) => {
      if (keyId === 'a' && load.mock.calls.filter((c) => c[0] === 'a').length === 1) await gateA;
      return loaded(dekFor(keyId === 'a' ? 1 : 2));
    });
    const cache = new DekCache({ maxEntries: 1, ttlMs: 10_000, clock: fakeClock(), load });
    const a = cache.acquire('a', 1);
    await cache.acquire('b', 1);
    releaseA();
    const dekA = await a;
    expect(dekA.equals(dekFor(1))).toBe(true);
  });

  describe('stale-if-error', () => {
    function failingAfterFirst(code: 'KMS_UNAVAILABLE' | 'THROTTLED' | 'KMS_DENIED' | 'INTERNAL') {
      let calls = 0;
      return vi.fn(async (_keyId: string, version: number) => {
        if (calls++ > 0) throw new GatewayError(code, 'injected');
        return loaded(dekFor(version));
      });
    }

    it.each(['KMS_UNAVAILABLE', 'THROTTLED'] as const)(
      'serves an expired DEK while the unwrap fails with %s, until staleIfErrorMs ends',
      async (code) => {
        const load = failingAfterFirst(code);
        const onStale = vi.fn();
        const cache = new DekCache({ maxEntries: 10, ttlMs: 1000, staleIfErrorMs: 5000, clock: fakeClock(), load, onStale });
        const first = await cache.acquire('k', 1);
        vi.advanceTimersByTime(1500);
        expect(cache.peek('k', 1)).toBeUndefined(); // past its TTL: not a hit
        expect(await cache.acquire('k', 1)).toBe(first);
        expect(cache.stats.staleServed).toBe(1);
        expect(onStale).toHaveBeenCalledWith('k', 1, code);
        vi.advanceTimersByTime(4000); // 5.5 s after the unwrap: still inside TTL + staleIfErrorMs
        expect(await cache.acquire('k', 1)).toBe(first);
        vi.advanceTimersByTime(600); // 6.1 s: past it, zeroized
        expect(first.every((b) => b === 0)).toBe(true);
        await expect(cache.acquire('k', 1)).rejects.toMatchObject({ code });
        expect(cache.stats.staleServed).toBe(2);
      },
    );

    it.each(['KMS_DENIED', 'INTERNAL'] as const)('never serves a stale DEK when the unwrap fails with %s', async (code) => {
      const cache = new DekCache({ maxEntries: 10, ttlMs: 1000, staleIfErrorMs: 5000, clock: fakeClock(), load: failingAfterFirst(code) });
      await cache.acquire('k', 1);
      vi.advanceTimersByTime(1500);
      await expect(cache.acquire('k', 1)).rejects.toMatchObject({ code });
      expect(cache.stats.staleServed).toBe(0);
    });

    it('with staleIfErrorMs 0 an expired DEK is zeroized at its TTL', async () => {
      const cache = new DekCache({ maxEntries: 10, ttlMs: 1000, clock: fakeClock(), load: failingAfterFirst('KMS_UNAVAILABLE') });
      const first = await cache.acquire('k', 1);
      vi.advanceTimersByTime(1001);
      expect(first.every((b) => b === 0)).toBe(true);
      await expect(cache.acquire('k', 1)).rejects.toMatchObject({ code: 'KMS_UNAVAILABLE' });
    });

    it('a successful unwrap replaces the stale DEK and zeroizes it', async () => {
      const { cache, load } = makeCache({ ttlMs: 1000, staleIfErrorMs: 5000 });
      const first = await cache.acquire('k', 1);
      vi.advanceTimersByTime(1500);
      const second = await cache.acquire('k', 1);
      expect(second).not.toBe(first);
      expect(first.every((b) => b === 0)).toBe(true);
      expect(load).toHaveBeenCalledTimes(2);
    });
  });

  it('evictWhere zeroizes every DEK whose KEK list it condemns, fresh or stale, and no other', async () => {
    const { cache } = makeCache({ ttlMs: 1000, staleIfErrorMs: 5000 });
    const a = await cache.acquire('a', 1);
    vi.advanceTimersByTime(1500); // a is stale now, still held
    const b = await cache.acquire('b', 2);
    const other = await cache.acquire('other', 3);
    expect(cache.keks()).toEqual(new Set([KEK, 'fake://kek-2']));
    expect(cache.evictWhere((keks) => keks.includes(KEK))).toBe(2);
    expect(a.every((x) => x === 0) && b.every((x) => x === 0)).toBe(true);
    expect(other.equals(dekFor(3))).toBe(true);
    expect(cache.size).toBe(1);
  });

  it('reconfigure: a smaller size zeroizes the least recently used at once; new TTLs apply to later unwraps', async () => {
    const { cache } = makeCache({ max: 3, ttlMs: 1000 });
    const one = await cache.acquire('a', 1);
    const two = await cache.acquire('b', 2);
    const three = await cache.acquire('c', 3);
    cache.peek('a', 1);
    cache.reconfigure({ maxEntries: 2, ttlMs: 10_000 });
    expect(two.every((x) => x === 0)).toBe(true);
    expect(cache.peek('a', 1)).toBe(one);
    expect(cache.peek('c', 3)).toBe(three);
    vi.advanceTimersByTime(1001); // the old entries keep their old TTL
    expect(one.every((x) => x === 0)).toBe(true);
    const four = await cache.acquire('d', 4);
    vi.advanceTimersByTime(5000);
    expect(cache.peek('d', 4)).toBe(four);
  });
});
