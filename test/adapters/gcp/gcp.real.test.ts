import { describe, expect, it } from 'vitest';
import { AdapterRegistry } from '../../../adapters/registry.js';

// Real-cloud acceptance test: runs only when a KEK and Google credentials are provided
// (adapters/gcp/README.md). CI has neither, so it is skipped there; the emulator tests are not.
const kek = process.env['KMSGW_GCP_TEST_KEK'];

describe.skipIf(!kek)('Cloud KMS (real cloud)', () => {
  it('wraps and unwraps a DEK under the given CryptoKey', async () => {
    const registry = new AdapterRegistry({ dataDir: '/nonexistent', timeoutMs: 10_000 });
    const dek = Buffer.alloc(32, 7);
    const ctx = { keyId: 'kmsgw/acceptance', version: 1 };
    await registry.use(kek as string, async (wrapper) => {
      const wrapped = await wrapper.wrap(dek, ctx);
      expect(wrapped.kekVersion).toMatch(/\/cryptoKeyVersions\/\d+$/);
      expect((await wrapper.unwrap(wrapped, ctx)).equals(dek)).toBe(true);
      await expect(wrapper.unwrap(wrapped, { keyId: 'kmsgw/other', version: 1 })).rejects.toMatchObject({ code: 'DECRYPT_FAILED' });
    });
    await registry.close();
  });
});
