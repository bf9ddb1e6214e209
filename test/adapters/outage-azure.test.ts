import { azureModule } from '../../adapters/azure/index.js';
import { fakeCredential, keyClient, startAzureKvEmulator } from '../helpers/azure-kv.js';
import type { Kek } from './conformance.js';
import { describeOutage, type OutageKms } from './outage.js';

/**
 * A Key Vault emulator of its own: outages (503) and throttling (429 with Retry-After) from its
 * faults file, a disabled key version through PATCH attributes.enabled.
 */
async function open(): Promise<OutageKms> {
  const emu = await startAzureKvEmulator();
  const kc = keyClient(emu.vaultUrl, emu.caCertPath);
  const host = new URL(emu.vaultUrl).host;
  let seq = 0;
  const setEnabled = async (kek: Kek, enabled: boolean) => {
    const [name, version] = (kek.kekVersion as string).split('/').slice(-2) as [string, string];
    await kc.updateKeyProperties(name, version, { enabled });
  };
  return {
    adapters: { 'azure-kv': { caFile: emu.caCertPath } },
    newKek: async () => {
      const name = `outage-${Date.now()}-${seq++}`;
      const key = await kc.createRsaKey(name, { keySize: 2048 });
      return { uri: `azure-kv://${host}/keys/${name}`, kekVersion: key.id as string };
    },
    down: async () => emu.setFaults({ '503': ['*'] }),
    up: async () => emu.setFaults(null),
    throttle: async (ms, times) =>
      emu.setFaults({ '429': [{ name: '*', retryAfter: Math.ceil(ms / 1000), ...(times !== undefined ? { times } : {}) }] }),
    slow: async (ms) => emu.setFaults({ DELAY_MS: ms }),
    disable: (kek) => setEnabled(kek, false),
    enable: (kek) => setEnabled(kek, true),
    dispose: () => emu.dispose(),
  };
}

describeOutage('Azure Key Vault (emulator)', {
  scheme: 'azure-kv',
  // The adapter with a fake token credential; challenge-resource checks off (test vault only).
  module: azureModule({ credential: fakeCredential, clientOptions: { disableChallengeResourceVerification: true } }),
  open,
  deniedReply: 'ERR KMS_DENIED Azure Key Vault: the key is disabled',
});
