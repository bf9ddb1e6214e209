import { afterEach, describe, expect, it } from 'vitest';
import { GuardedWrapper } from '../../adapters/guard.js';
import { AdapterRegistry, kekScheme } from '../../adapters/registry.js';
import { AdapterSettingsSchema } from '../../adapters/settings.js';
import { FAKE_FAILURES, fakeKms, fakeLoader, fakeModule } from '../helpers/fake-adapter.js';

afterEach(() => fakeKms.reset());

const guarded = (timeoutMs = 200) => new GuardedWrapper(fakeModule.createWrapper('fake://a', { dataDir: '/x' }), { timeoutMs });
const ctx = { keyId: 'k', version: 1 };

describe('GuardedWrapper invariants', () => {
  it('returns an isolated copy and zeroizes the adapter’s buffer', async () => {
    const g = guarded();
    const { blob } = await g.wrap(Buffer.alloc(32, 3), ctx);
    const dek = await g.unwrap({ blob }, ctx);
    expect(dek.equals(Buffer.alloc(32, 3))).toBe(true);
    expect(fakeKms.lastUnwrapped).toBeDefined();
    expect(fakeKms.lastUnwrapped).not.toBe(dek);
    expect(fakeKms.lastUnwrapped?.every((b) => b === 0)).toBe(true);
  });

  it('refuses a DEK of the wrong length, and still zeroizes it', async () => {
    const g = guarded();
    const { blob } = await g.wrap(Buffer.alloc(32, 3), ctx);
    fakeKms.mode = 'short-dek';
    await expect(g.unwrap({ blob }, ctx)).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(fakeKms.lastUnwrapped?.subarray(0, 16).every((b) => b === 0)).toBe(true);
  });

  it('refuses to wrap something that is not a 32-byte DEK', async () => {
    await expect(guarded().wrap(Buffer.alloc(16), ctx)).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('passes classified errors through and hides raw ones behind INTERNAL', async () => {
    const g = guarded();
    for (const [mode, code] of FAKE_FAILURES) {
      fakeKms.mode = mode;
      const err = (await g.unwrap({ blob: Buffer.alloc(32) }, ctx).then(
        () => undefined,
        (e: unknown) => e,
      )) as Error & { code: string };
      expect(err.code).toBe(code);
      expect(err.message).not.toContain('AKIA');
    }
  });

  it('times out a hanging KMS with KMS_UNAVAILABLE and aborts the call', async () => {
    fakeKms.mode = 'hang';
    const started = performance.now();
    await expect(guarded(50).unwrap({ blob: Buffer.alloc(32) }, ctx)).rejects.toMatchObject({
      code: 'KMS_UNAVAILABLE',
      message: 'KMS did not answer within 50 ms',
    });
    expect(performance.now() - started).toBeLessThan(1000);
  });
});

describe('AdapterRegistry', () => {
  it('maps schemes, refuses unknown ones, and builds one wrapper per KEK URI', async () => {
    expect(kekScheme('aws-kms://alias/x')).toBe('aws-kms');
    expect(kekScheme('nonsense')).toBeUndefined();
    let loads = 0;
    const registry = new AdapterRegistry(
      { dataDir: '/x', timeoutMs: 100 },
      {
        fake: async () => {
          loads++;
          return fakeLoader();
        },
      },
    );
    expect(() => registry.assertSupported('aws-kms://alias/x')).toThrow(/no KEK adapter for scheme aws-kms/);
    expect(() => registry.assertSupported('constructor://x')).toThrow(/no KEK adapter/);
    const same = async (w: GuardedWrapper) => w;
    const [a, b] = await Promise.all([registry.use('fake://one', same), registry.use('fake://one', same)]);
    expect(a).toBe(b);
    expect(await registry.use('fake://two', same)).not.toBe(a);
    expect(loads).toBe(2);
    await registry.close();
  });

  it('loads the local adapter lazily from the default table', async () => {
    // A deadline far from the file read it waits for (100 ms failed under a loaded suite).
    const settings = AdapterSettingsSchema.parse({ local: { enabled: true } });
    const registry = new AdapterRegistry({ dataDir: '/nonexistent', settings, timeoutMs: 5000 });
    await registry.use('local://kek', async (w) => {
      expect(w.kek).toBe('local://kek');
      await expect(w.wrap(Buffer.alloc(32), ctx)).rejects.toMatchObject({ code: 'KMS_DENIED' });
    });
    await registry.close();
  });
});
