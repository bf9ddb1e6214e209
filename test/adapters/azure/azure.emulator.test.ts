import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { azureModule } from '../../../adapters/azure/index.js';
import { fakeCredential, keyClient, startAzureKvEmulator, type AzureKvEmulator, type AzureKvEndpoint } from '../../helpers/azure-kv.js';
import { rawConnect, useRunningGateways } from '../../helpers/gateway.js';
import { useTmpDirs } from '../../helpers/tmp.js';
import {
  describeKeyWrapperConformance,
  startHarnessGateway,
  type ConformanceHarness,
  type Kek,
  type KmsTarget,
  type StoppableTarget,
} from '../conformance.js';

const shared = inject('azureKv');
const tmp = useTmpDirs();
const running = useRunningGateways();

let seq = 0;
/** Keys made in `vault`, reached by the adapter at `host` (the vault's own, or a relay's). */
function target(vault: AzureKvEndpoint, host = new URL(vault.vaultUrl).host): KmsTarget {
  return {
    adapters: { 'azure-kv': { caFile: vault.caCertPath } },
    newKek: async () => {
      const name = `kek-${Date.now()}-${seq++}`;
      const key = await keyClient(vault.vaultUrl, vault.caCertPath).createRsaKey(name, { keySize: 2048 });
      // The kid the vault reported, as the adapter sees it through `host`.
      return { uri: `azure-kv://${host}/keys/${name}`, kekVersion: (key.id as string).replace(new URL(vault.vaultUrl).host, host) };
    },
  };
}

async function ownEmulator(): Promise<StoppableTarget> {
  const emu = await startAzureKvEmulator();
  return { ...target(emu), stop: () => emu.stop(), start: () => emu.start(), dispose: () => emu.dispose() };
}

/** The key name and version in a Kek's kid. */
const nameAndVersion = (kek: Kek) => (kek.kekVersion as string).split('/').slice(-2) as [string, string];
const kc = keyClient(shared.vaultUrl, shared.caCertPath);

const harness: ConformanceHarness = {
  scheme: 'azure-kv',
  // The adapter with a fake token credential; challenge-resource checks off (test vault only).
  module: azureModule({ credential: fakeCredential, clientOptions: { disableChallengeResourceVerification: true } }),
  target: target(shared),
  generates: false,
  // Key Vault wrap has no AAD: the vault unwraps a moved blob happily, the gateway refuses to serve it.
  bindsContext: false,
  movedBlobReply: 'ERR DECRYPT_FAILED stored key failed its commitment check',
  disable: {
    off: async (kek) => void (await kc.updateKeyProperties(...nameAndVersion(kek), { enabled: false })),
    on: async (kek) => void (await kc.updateKeyProperties(...nameAndVersion(kek), { enabled: true })),
    reply: 'ERR KMS_DENIED Azure Key Vault: the key is disabled',
  },
  // A new key version in the vault.
  rotate: async (kek) => {
    const rotated = await kc.createRsaKey(nameAndVersion(kek)[0], { keySize: 2048 });
    expect(rotated.id).not.toBe(kek.kekVersion);
    return rotated.id;
  },
  outage: { open: ownEmulator, timeoutMs: 1000, reply: /^ERR KMS_UNAVAILABLE Azure Key Vault: vault unreachable$/ },
  relay: { upstreamPort: Number(new URL(shared.vaultUrl).port), via: (port) => target(shared, `localhost:${port}`) },
};

describeKeyWrapperConformance('Azure Key Vault (emulator)', harness);

describe('Azure Key Vault adapter against the Key Vault emulator', () => {
  it('verifies TLS: without the vault CA the call fails, and nothing is turned off process-wide', async () => {
    const key = await harness.target.newKek();
    const gw = await startHarnessGateway(harness, await tmp(), { target: { ...harness.target, adapters: { 'azure-kv': {} } } });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`CREATE az/tls ${key.uri}`)).toBe("ERR KMS_DENIED Azure Key Vault: the vault's TLS certificate is not trusted");
    c.close();
  });
});

describe('Azure Key Vault failures (an emulator of its own)', () => {
  let emu: AzureKvEmulator;
  beforeAll(async () => {
    emu = await startAzureKvEmulator();
  });
  afterAll(async () => {
    await emu?.dispose();
  });
  afterEach(() => emu.setFaults(null));

  it('maps 403, 404, 429 with Retry-After, 5xx and a slow vault to protocol codes', async () => {
    const own = target(emu);
    const key = await own.newKek();
    const name = key.uri.split('/').pop() as string;
    const gw = await startHarnessGateway(harness, await tmp(), { target: own, timeoutMs: 500 });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE az/f ${key.uri}`);
    // A KEK of its own for the 429: its Retry-After (past the deadline) holds that KEK's calls back.
    const throttled = await own.newKek();
    await c.ask(`CREATE az/t ${throttled.uri}`);
    gw.cache.clear();
    emu.setFaults({ '429': [{ name: throttled.uri.split('/').pop() as string, retryAfter: 7 }] });
    expect(await c.ask('GET az/t')).toBe('ERR THROTTLED Azure Key Vault: request rate exceeded; retry after 7 s');
    expect(await c.ask('GET az/t')).toMatch(/^ERR THROTTLED the KMS asked to wait; calls for this KEK resume in \d+ ms$/);
    emu.setFaults({ '403': [name] });
    expect(await c.ask('GET az/f')).toBe('ERR KMS_DENIED Azure Key Vault: access to the key was denied');
    emu.setFaults({ '404': [name] });
    expect(await c.ask('GET az/f')).toBe('ERR KMS_DENIED Azure Key Vault: the key or key version was not found');
    emu.setFaults({ '503': [name] });
    expect(await c.ask('GET az/f')).toBe('ERR KMS_UNAVAILABLE Azure Key Vault: service error');
    emu.setFaults({ DELAY_MS: 3000 });
    const started = performance.now();
    expect(await c.ask('GET az/f')).toMatch(/^ERR KMS_UNAVAILABLE /);
    expect(performance.now() - started).toBeLessThan(2000);
    emu.setFaults(null);
    expect(await c.ask('GET az/f')).toMatch(/^OK /);
    c.close();
  });
});
