import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { azureModule } from '../../../adapters/azure/index.js';
import { DEFAULT_LOADERS } from '../../../adapters/registry.js';
import { createClient } from '../../../src/client/index.js';
import { fileNameFor } from '../../../src/keystore/file-store.js';
import { fakeCredential, keyClient, startAzureKvEmulator, type AzureKvEmulator, type AzureKvEndpoint } from '../../helpers/azure-kv.js';
import { okPayload as ok, b64, rawConnect, startTestGateway, type TestGateway, useRunningGateways } from '../../helpers/gateway.js';
import { useTmpDirs } from '../../helpers/tmp.js';

const shared = inject('azureKv');
const tmp = useTmpDirs();
const running = useRunningGateways();

/** The adapter with a fake token credential; challenge-resource checks off (test vault only). */
const azureLoader = async () => azureModule({ credential: fakeCredential, clientOptions: { disableChallengeResourceVerification: true } });

async function gateway(dir: string, vault: AzureKvEndpoint = shared, opts: { timeoutMs?: number; trustCa?: boolean } = {}) {
  const gw = await startTestGateway(
    dir,
    {
      keys: { autoCreate: false },
      kms: {
        timeoutMs: opts.timeoutMs ?? 2000,
        adapters: { 'azure-kv': opts.trustCa === false ? {} : { caFile: vault.caCertPath } },
      },
    },
    { loaders: { ...DEFAULT_LOADERS, 'azure-kv': azureLoader } },
  );
  running.push(gw);
  return gw;
}

let seq = 0;
async function newKey(vault: AzureKvEndpoint = shared): Promise<{ name: string; uri: string; kid: string }> {
  const name = `kek-${Date.now()}-${seq++}`;
  const key = await keyClient(vault.vaultUrl, vault.caCertPath).createRsaKey(name, { keySize: 2048 });
  return { name, uri: `azure-kv://${new URL(vault.vaultUrl).host}/keys/${name}`, kid: key.id as string };
}


describe('Azure Key Vault adapter against the Key Vault emulator', () => {
  it('CREATE, GET, restart with an empty cache, GET: same DEK, one unwrap per restart; the kid is stored', async () => {
    const key = await newKey();
    const dir = await tmp();
    const gw = await gateway(dir);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`CREATE az/one ${key.uri}`)).toBe('OK 1');
    const dek = ok(await c.ask('GET az/one'));
    expect(gw.adapterCalls).toEqual([{ op: 'wrap', kek: key.uri }]);
    c.close();
    await gw.close();
    running.pop();

    const gw2 = await gateway(dir);
    const c2 = await rawConnect(gw2.socketPath as string);
    expect(ok(await c2.ask('GET az/one'))).toBe(dek);
    expect(ok(await c2.ask('GET az/one'))).toBe(dek);
    expect(gw2.adapterCalls).toEqual([{ op: 'unwrap', kek: key.uri }]);
    const info = JSON.parse(ok(await c2.ask('INFO az/one')));
    expect(info.versions[0]).toMatchObject({ kek: key.uri, kekVersion: key.kid });
    c2.close();
  });

  it('rotation in the vault: old blobs stay readable, new DEK versions use the new key version', async () => {
    const key = await newKey();
    const dir = await tmp();
    const gw = await gateway(dir);
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('az/rot', key.uri);
    const v1 = await cl.get('az/rot');
    const env = await cl.enc('az/rot', Buffer.from('before the vault rotated'));
    const rotated = await keyClient(shared.vaultUrl, shared.caCertPath).createRsaKey(key.name, { keySize: 2048 });
    expect(rotated.id).not.toBe(key.kid);
    expect(await cl.rotate('az/rot')).toBe(2);
    gw.cache.clear();
    expect((await cl.get('az/rot@1')).equals(v1)).toBe(true);
    expect((await cl.dec('az/rot', env)).toString()).toBe('before the vault rotated');
    const info = (await cl.info('az/rot')) as { versions: Array<{ kekVersion: string }> };
    expect(info.versions.map((v) => v.kekVersion)).toEqual([key.kid, rotated.id]);
    await cl.close();
  });

  it('a disabled key gives KMS_DENIED', async () => {
    const key = await newKey();
    const dir = await tmp();
    const gw = await gateway(dir);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE az/dis ${key.uri}`);
    gw.cache.clear();
    const kc = keyClient(shared.vaultUrl, shared.caCertPath);
    const version = key.kid.split('/').pop() as string;
    await kc.updateKeyProperties(key.name, version, { enabled: false });
    expect(await c.ask('GET az/dis')).toBe('ERR KMS_DENIED Azure Key Vault: the key is disabled');
    await kc.updateKeyProperties(key.name, version, { enabled: true });
    expect(await c.ask('GET az/dis')).toMatch(/^OK /);
    c.close();
  });

  it('a blob swapped between two ids is refused (Key Vault has no AAD: the commitment tag catches it)', async () => {
    const key = await newKey();
    const dir = await tmp();
    const gw = await gateway(dir);
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('az/a', key.uri);
    await cl.create('az/b', key.uri);
    const dekB = await cl.get('az/b');
    await cl.close();
    await gw.close();
    running.pop();
    const keys = join(dir, 'data', 'keys');
    const a = JSON.parse(await readFile(join(keys, fileNameFor('az/a')), 'utf8'));
    const b = JSON.parse(await readFile(join(keys, fileNameFor('az/b')), 'utf8'));
    a.versions[0].wrapped = b.versions[0].wrapped;
    await writeFile(join(keys, fileNameFor('az/a')), JSON.stringify(a));
    const gw2 = await gateway(dir);
    const c = await rawConnect(gw2.socketPath as string);
    // The vault unwraps b's DEK happily; the gateway refuses to serve it as a's.
    expect(await c.ask('GET az/a')).toBe('ERR DECRYPT_FAILED stored key failed its commitment check');
    expect(ok(await c.ask('GET az/b'))).toBe(dekB.toString('base64'));
    c.close();
  });

  it('ENC/DEC through an Azure-wrapped DEK', async () => {
    const key = await newKey();
    const dir = await tmp();
    const gw = await gateway(dir);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE az/col ${key.uri}`);
    const env = ok(await c.ask(`ENC az/col ${b64('ssn 078-05-1120')} ${b64('people:3')}`));
    gw.cache.clear();
    expect(await c.ask(`DEC az/col ${env} ${b64('people:3')}`)).toBe(`OK ${b64('ssn 078-05-1120')}`);
    expect(await c.ask(`DEC az/col ${env}`)).toMatch(/^ERR DECRYPT_FAILED /);
    c.close();
  });

  it('verifies TLS: without the vault CA the call fails, and nothing is turned off process-wide', async () => {
    const key = await newKey();
    const dir = await tmp();
    const gw = await gateway(dir, shared, { trustCa: false });
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
    const key = await newKey(emu);
    const dir = await tmp();
    const gw = await gateway(dir, emu, { timeoutMs: 500 });
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE az/f ${key.uri}`);
    gw.cache.clear();
    emu.setFaults({ '429': [{ name: key.name, retryAfter: 7 }] });
    expect(await c.ask('GET az/f')).toBe('ERR THROTTLED Azure Key Vault: request rate exceeded; retry after 7 s');
    emu.setFaults({ '403': [key.name] });
    expect(await c.ask('GET az/f')).toBe('ERR KMS_DENIED Azure Key Vault: access to the key was denied');
    emu.setFaults({ '404': [key.name] });
    expect(await c.ask('GET az/f')).toBe('ERR KMS_DENIED Azure Key Vault: the key or key version was not found');
    emu.setFaults({ '503': [key.name] });
    expect(await c.ask('GET az/f')).toBe('ERR KMS_UNAVAILABLE Azure Key Vault: service error');
    emu.setFaults({ DELAY_MS: 3000 });
    const started = performance.now();
    expect(await c.ask('GET az/f')).toMatch(/^ERR KMS_UNAVAILABLE /);
    expect(performance.now() - started).toBeLessThan(2000);
    emu.setFaults(null);
    expect(await c.ask('GET az/f')).toMatch(/^OK /);
    c.close();
  });

  it('a stopped vault gives KMS_UNAVAILABLE within the timeout; cached keys keep working; it recovers', async () => {
    const key = await newKey(emu);
    const dir = await tmp();
    const gw = await gateway(dir, emu, { timeoutMs: 1000 });
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE az/warm ${key.uri}`);
    await c.ask(`CREATE az/cold ${key.uri}`);
    const cold = ok(await c.ask('GET az/cold'));
    gw.cache.evict('az/cold', 1);
    await emu.stop();
    const started = performance.now();
    expect(await c.ask('GET az/cold')).toBe('ERR KMS_UNAVAILABLE Azure Key Vault: vault unreachable');
    expect(performance.now() - started).toBeLessThan(1000 + 1000);
    expect(await c.ask('GET az/warm')).toMatch(/^OK /);
    await emu.start();
    expect(ok(await c.ask('GET az/cold'))).toBe(cold);
    c.close();
  });
});
