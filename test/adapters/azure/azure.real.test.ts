import { describe, expect, it } from 'vitest';
import { AdapterRegistry } from '../../../adapters/registry.js';

// Real-cloud acceptance test: runs only when a vault key and Azure credentials are provided
// (adapters/azure/README.md). CI has neither, so it is skipped there; the emulator tests are not.
const kek = process.env['KMSGW_AZURE_TEST_KEK'];

describe.skipIf(!kek)('Azure Key Vault (real cloud)', () => {
  it('wraps and unwraps a DEK under the given key with DefaultAzureCredential', async () => {
    const registry = new AdapterRegistry({ dataDir: '/nonexistent', timeoutMs: 15_000 });
    const dek = Buffer.alloc(32, 7);
    const ctx = { keyId: 'kmsgw/acceptance', version: 1 };
    await registry.use(kek as string, async (wrapper) => {
      const wrapped = await wrapper.wrap(dek, ctx);
      expect(wrapped.kekVersion).toMatch(/\/keys\/[A-Za-z0-9-]+\/[A-Za-z0-9]{32}$/);
      expect((await wrapper.unwrap(wrapped, ctx)).equals(dek)).toBe(true);
    });
    await registry.close();
  });
});
