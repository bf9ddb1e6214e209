import { afterEach, describe, expect, it, vi } from 'vitest';
import { GuardedWrapper } from '../../adapters/guard.js';
import { KekHealth } from '../../adapters/health.js';
import { ConcurrencyLimit, Saturated } from '../../adapters/limit.js';
import type { KeyWrapper, WrappedKey } from '../../adapters/types.js';

afterEach(() => vi.useRealTimers());

const tick = () => new Promise<void>((r) => setImmediate(r));

describe('ConcurrencyLimit (kms.maxConcurrent)', () => {
  it('lets `max` calls run, queues the rest in order, and hands each freed slot to the next', async () => {
    const limit = new ConcurrencyLimit(2);
    const a = await limit.acquire(1000);
    const b = await limit.acquire(1000);
    const started: string[] = [];
    const c = limit.acquire(1000).then((r) => (started.push('c'), r));
    const d = limit.acquire(1000).then((r) => (started.push('d'), r));
    await tick();
    expect(started).toEqual([]);
    expect(limit.inFlight).toBe(2);
    a();
    a(); // a second release of the same slot changes nothing
    await tick();
    expect(started).toEqual(['c']);
    b();
    await tick();
    expect(started).toEqual(['c', 'd']);
    (await c)();
    (await d)();
    expect(limit.inFlight).toBe(0);
    expect(limit.peak).toBe(2);
  });

  it('refuses a call that cannot start within its wait with THROTTLED, and forgets it', async () => {
    vi.useFakeTimers();
    const limit = new ConcurrencyLimit(1);
    const held = await limit.acquire(10);
    const refused = limit.acquire(50);
    vi.advanceTimersByTime(50);
    await expect(refused).rejects.toBeInstanceOf(Saturated);
    await expect(refused).rejects.toMatchObject({ code: 'THROTTLED' });
    held();
    expect(limit.inFlight).toBe(0);
  });
});

describe('the guard under kms.maxConcurrent', () => {
  it('never has more calls at the KMS than the limit, and a refusal leaves the KEK healthy', async () => {
    let running = 0;
    let most = 0;
    const gates: Array<() => void> = [];
    const inner: KeyWrapper = {
      kek: 'fake://k',
      wrap: () => Promise.reject(new Error('unused')),
      unwrap: async (w: WrappedKey) => {
        running++;
        most = Math.max(most, running);
        await new Promise<void>((open) => gates.push(open));
        running--;
        return Buffer.from(w.blob);
      },
      close: async () => undefined,
    };
    const health = new KekHealth();
    const guard = new GuardedWrapper(inner, { timeoutMs: 60_000, limit: new ConcurrencyLimit(2), health });
    const calls = Array.from({ length: 5 }, (_, i) => guard.unwrap({ blob: Buffer.alloc(32, i) }, { keyId: 'k', version: 1 }));
    for (let done = 0; done < 5; done++) {
      await tick();
      gates.shift()?.();
    }
    const deks = await Promise.all(calls);
    expect(deks.map((d) => d[0])).toEqual([0, 1, 2, 3, 4]);
    expect(most).toBe(2);

    // Every slot taken (here by hand): a call that cannot start within its deadline is refused, and
    // the refusal is not the KMS's: the KEK's health is not touched.
    const shared = new ConcurrencyLimit(1);
    const held = await shared.acquire(1000);
    const tight = new GuardedWrapper(inner, { timeoutMs: 30, limit: shared, health });
    await expect(tight.unwrap({ blob: Buffer.alloc(32, 8) }, { keyId: 'k', version: 1 })).rejects.toMatchObject({ code: 'THROTTLED' });
    expect(health.status('fake://k').state).toBe('ok');
    held();
  });

  it('a call left with little of its deadline after queueing that then times out is THROTTLED, not held against the KMS', async () => {
    const hang: KeyWrapper = {
      kek: 'fake://slow',
      wrap: () => Promise.reject(new Error('unused')),
      unwrap: () => new Promise<Buffer>(() => undefined), // a KMS that never answers
      close: async () => undefined,
    };
    const health = new KekHealth();
    const shared = new ConcurrencyLimit(1);
    const held = await shared.acquire(1000);
    const guard = new GuardedWrapper(hang, { timeoutMs: 80, limit: shared, health });
    const call = guard.unwrap({ blob: Buffer.alloc(32) }, { keyId: 'k', version: 1 });
    setTimeout(held, 60); // the slot frees with a quarter of the deadline left
    await expect(call).rejects.toMatchObject({ code: 'THROTTLED' });
    expect(health.status('fake://slow').state).toBe('unknown');
  });
});
