import { describe, expect, it } from 'vitest';
import type { GuardedWrapper } from '../../adapters/guard.js';
import { AdapterRegistry, DEFAULT_LOADERS, type AdapterLoader } from '../../adapters/registry.js';
import type { KeyWrapper, WrapContext, WrappedKey } from '../../adapters/types.js';
import { KmsError } from '../../src/protocol/errors.js';
import { formatReply } from '../../src/protocol/reply.js';
import { startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const ctx = { keyId: 'k', version: 1 };

/** Wrappers that record their closing, refuse calls once closed, and can hold an unwrap open. */
function tracked() {
  const built: string[] = [];
  const closed: string[] = [];
  let hold: Promise<void> = Promise.resolve();
  class Wrapper implements KeyWrapper {
    private shut = false;
    constructor(readonly kek: string) {
      built.push(kek);
    }
    async wrap(dek: Buffer, _ctx: WrapContext): Promise<WrappedKey> {
      if (this.shut) throw new KmsError('INTERNAL', 'KEK adapter is closed');
      return { blob: Buffer.from(dek) };
    }
    async unwrap(wrapped: WrappedKey, _ctx: WrapContext): Promise<Buffer> {
      await hold;
      if (this.shut) throw new KmsError('INTERNAL', 'KEK adapter is closed');
      return Buffer.from(wrapped.blob);
    }
    async close(): Promise<void> {
      if (!this.shut) closed.push(this.kek);
      this.shut = true;
    }
  }
  const loader: AdapterLoader = async () => ({ createWrapper: (kek) => new Wrapper(kek) });
  return {
    built,
    closed,
    loader,
    registry: (maxWrappers?: number) =>
      new AdapterRegistry({ dataDir: '/x', timeoutMs: 5000, ...(maxWrappers ? { maxWrappers } : {}) }, { t: loader }),
    /** Unwraps wait until the returned function is called. */
    holdUnwraps(): () => void {
      let release!: () => void;
      hold = new Promise((r) => (release = r));
      return release;
    },
  };
}

const touch = async (w: GuardedWrapper) => w.kek;

describe('AdapterRegistry bound', () => {
  it('keeps at most maxWrappers, evicting and closing the least recently used', async () => {
    const t = tracked();
    const registry = t.registry(2);
    await registry.use('t://a', touch);
    await registry.use('t://b', touch);
    await registry.use('t://a', touch); // a is now the most recently used
    await registry.use('t://c', touch);
    expect(registry.size).toBe(2);
    await expect.poll(() => t.closed).toEqual(['t://b']);
    await registry.use('t://b', touch); // built again; evicts a
    expect(t.built).toEqual(['t://a', 't://b', 't://c', 't://b']);
    await expect.poll(() => t.closed).toEqual(['t://b', 't://a']);
    expect(registry.size).toBe(2);
    await registry.close();
    expect(t.closed.sort()).toEqual(['t://a', 't://b', 't://b', 't://c']);
    expect(registry.size).toBe(0);
  });

  it('defaults to 1024 wrappers', async () => {
    const t = tracked();
    const registry = t.registry();
    for (let i = 0; i < 1030; i++) await registry.use(`t://k${i}`, touch);
    expect(registry.size).toBe(1024);
    await expect.poll(() => t.closed).toEqual(['t://k0', 't://k1', 't://k2', 't://k3', 't://k4', 't://k5']);
    await registry.close();
    expect(t.closed).toHaveLength(1030);
  });

  it('closes a wrapper evicted while a call uses it only after that call settles', async () => {
    const t = tracked();
    const registry = t.registry(1);
    const release = t.holdUnwraps();
    const inFlight = registry.use('t://a', (w) => w.unwrap({ blob: Buffer.alloc(32, 1) }, ctx));
    // A wrapper held across awaits (REWRAP keeps its target for every version) stays usable too.
    const held = registry.use('t://x', async (w) => {
      await registry.use('t://y', touch); // evicts x (and a) while x is in use
      await new Promise((r) => setImmediate(r));
      return w.wrap(Buffer.alloc(32, 2), ctx);
    });
    expect(registry.size).toBe(1);
    expect((await held).blob).toEqual(Buffer.alloc(32, 2));
    await expect.poll(() => t.closed).toContain('t://x');
    expect(t.closed).not.toContain('t://a');
    release();
    expect(await inFlight).toEqual(Buffer.alloc(32, 1));
    await expect.poll(() => t.closed).toContain('t://a');
    await registry.close();
  });

  it('close() waits for calls in flight, then closes their wrappers', async () => {
    const t = tracked();
    const registry = t.registry(4);
    const release = t.holdUnwraps();
    const inFlight = registry.use('t://a', (w) => w.unwrap({ blob: Buffer.alloc(32, 3) }, ctx));
    await expect.poll(() => t.built).toEqual(['t://a']);
    let closed = false;
    const closing = registry.close().then(() => (closed = true));
    await new Promise((r) => setImmediate(r));
    expect(closed).toBe(false);
    release();
    expect(await inFlight).toEqual(Buffer.alloc(32, 3));
    await closing;
    expect(t.closed).toEqual(['t://a']);
  });

  it('refuses a bound below 1', () => {
    expect(() => new AdapterRegistry({ dataDir: '/x', timeoutMs: 1, maxWrappers: 0 })).toThrow(/maxWrappers/);
  });
});

describe('a gateway and its KEK wrappers', () => {
  const running = useRunningGateways();
  const tmp = useTmpDirs();

  it('keeps at most 1024, closing the least recently used, while every key stays usable', async () => {
    const t = tracked();
    const gw = await startTestGateway(await tmp(), {}, { loaders: { ...DEFAULT_LOADERS, t: t.loader } });
    running.push(gw);
    const session = gw.pipeline.open({ transport: 'internal' });
    const ask = async (line: string) => formatReply(await session.handle(line));
    // Keys under 1030 different KEK URIs (REWRAP or ROTATE with a new URI each time does the same), one
    // after another: concurrent CREATEs each read the store first, so they would reach their KEKs in any order.
    const made: string[] = [];
    for (let i = 0; i < 1030; i++) made.push(await ask(`CREATE k${i} t://kek${i}`));
    expect(new Set(made)).toEqual(new Set(['OK 1']));
    await expect.poll(() => t.closed.length).toBe(6);
    expect(t.closed).toEqual(['t://kek0', 't://kek1', 't://kek2', 't://kek3', 't://kek4', 't://kek5']);
    gw.cache.clear();
    expect(await ask('GET k0')).toMatch(/^OK /); // its wrapper is built again
    expect(t.built.filter((k) => k === 't://kek0')).toHaveLength(2);
  });
});
