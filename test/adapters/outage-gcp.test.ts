import type { KeyManagementServiceClient } from '@google-cloud/kms';
import gcp from '../../adapters/gcp/index.js';
import { adminClient, createKey, startGcpKmsEmulator } from '../helpers/gcp-kms.js';
import type { Kek } from './conformance.js';
import { describeOutage, type OutageKms } from './outage.js';

process.env['METADATA_SERVER_DETECTION'] = 'none';

/**
 * A Cloud KMS emulator of its own: outages and throttling (with a google.rpc.RetryInfo) from its
 * faults file, a disabled KEK through UpdateCryptoKeyVersion.
 */
async function open(): Promise<OutageKms> {
  const emu = await startGcpKmsEmulator();
  const admin: KeyManagementServiceClient = adminClient(emu.endpoint);
  let seq = 0;
  const setState = async (kek: Kek, state: 'ENABLED' | 'DISABLED') =>
    void (await admin.updateCryptoKeyVersion({
      cryptoKeyVersion: { name: kek.kekVersion as string, state },
      updateMask: { paths: ['state'] },
    }));
  return {
    adapters: { 'gcp-kms': { endpoint: `127.0.0.1:${emu.endpoint.port}`, tls: false } },
    newKek: async () => {
      const name = await createKey(admin, { keyRing: 'outage', key: `k${Date.now()}-${seq++}` });
      return { uri: `gcp-kms://${name}`, kekVersion: `${name}/cryptoKeyVersions/1` };
    },
    down: async () => emu.setFaults({ UNAVAILABLE: ['*'] }),
    up: async () => emu.setFaults(null),
    throttle: async (ms, times) =>
      emu.setFaults({ RESOURCE_EXHAUSTED: [{ name: '*', retryDelayMs: ms, ...(times !== undefined ? { times } : {}) }] }),
    slow: async (ms) => emu.setFaults({ DELAY_MS: ms }),
    disable: (kek) => setState(kek, 'DISABLED'),
    enable: (kek) => setState(kek, 'ENABLED'),
    dispose: async () => {
      await admin.close();
      await emu.dispose();
    },
  };
}

describeOutage('Google Cloud KMS (emulator)', {
  scheme: 'gcp-kms',
  module: gcp,
  open,
  deniedReply: 'ERR KMS_DENIED Cloud KMS: the KEK version is disabled or destroyed',
});
