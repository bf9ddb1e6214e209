import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyManagementServiceClient } from '@google-cloud/kms';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { wrapAad } from '../../../adapters/gcp/index.js';
import { createClient } from '../../../src/client/index.js';
import { crc32c } from '../../../src/crypto/crc32c.js';
import { fileNameFor } from '../../../src/keystore/file-store.js';
import { adminClient, createKey, grpcCode, startGcpKmsEmulator, type GcpKmsEmulator, type GcpKmsEndpoint } from '../../helpers/gcp-kms.js';
import { okPayload as ok, b64, rawConnect, startTestGateway, useRunningGateways, type TestGateway } from '../../helpers/gateway.js';
import { useTmpDirs } from '../../helpers/tmp.js';

process.env['METADATA_SERVER_DETECTION'] = 'none';

const shared = inject('gcpKms');
const tmp = useTmpDirs();
const running = useRunningGateways();
const admins: KeyManagementServiceClient[] = [];

afterAll(async () => {
  await Promise.all(admins.map((a) => a.close()));
});

function admin(endpoint: GcpKmsEndpoint = shared) {
  const client = adminClient(endpoint);
  admins.push(client);
  return client;
}

let seq = 0;
async function newKey(endpoint: GcpKmsEndpoint = shared): Promise<{ name: string; uri: string }> {
  const name = await createKey(admin(endpoint), { keyRing: 'kmsgw', key: `k${Date.now()}-${seq++}` });
  return { name, uri: `gcp-kms://${name}` };
}

async function gateway(dir: string, endpoint: GcpKmsEndpoint = shared, timeoutMs = 2000) {
  const gw = await startTestGateway(dir, {
    keys: { autoCreate: false },
    kms: { timeoutMs, adapters: { 'gcp-kms': { endpoint: `${endpoint.host}:${endpoint.port}`, tls: false } } },
  });
  running.push(gw);
  return gw;
}


describe('Google Cloud KMS adapter against the emulator', () => {
  it('CREATE, GET, restart with an empty cache, GET: same DEK, one unwrap per restart; INFO names the CryptoKeyVersion', async () => {
    const key = await newKey();
    const dir = await tmp();
    const gw = await gateway(dir);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`CREATE gcp/one ${key.uri}`)).toBe('OK 1');
    const dek = ok(await c.ask('GET gcp/one'));
    expect(gw.adapterCalls).toEqual([{ op: 'wrap', kek: key.uri }]);
    c.close();
    await gw.close();
    running.pop();

    const gw2 = await gateway(dir);
    const c2 = await rawConnect(gw2.socketPath as string);
    expect(ok(await c2.ask('GET gcp/one'))).toBe(dek);
    expect(ok(await c2.ask('GET gcp/one'))).toBe(dek);
    expect(gw2.adapterCalls).toEqual([{ op: 'unwrap', kek: key.uri }]);
    const info = JSON.parse(ok(await c2.ask('INFO gcp/one')));
    expect(info.versions[0]).toMatchObject({ kek: key.uri, kekVersion: `${key.name}/cryptoKeyVersions/1` });
    c2.close();
  });

  it('the stored blob is bound to key id and version by its AAD', async () => {
    const key = await newKey();
    const dir = await tmp();
    const gw = await gateway(dir);
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('gcp/a', key.uri);
    await cl.create('gcp/b', key.uri);
    const dekA = await cl.get('gcp/a');
    await cl.close();
    await gw.close();
    running.pop();

    const keys = join(dir, 'data', 'keys');
    const a = JSON.parse(await readFile(join(keys, fileNameFor('gcp/a')), 'utf8'));
    const blob = Buffer.from(a.versions[0].wrapped, 'base64');
    // Directly with the SDK: the right AAD opens it, another id's AAD does not.
    const kms = admin();
    const right = wrapAad({ keyId: 'gcp/a', version: 1 });
    const [res] = await kms.decrypt({ name: key.name, ciphertext: blob, additionalAuthenticatedData: right });
    expect(Buffer.from(res.plaintext as Uint8Array).equals(dekA)).toBe(true);
    const wrong = wrapAad({ keyId: 'gcp/b', version: 1 });
    const err = await kms.decrypt({ name: key.name, ciphertext: blob, additionalAuthenticatedData: wrong }).catch((e: unknown) => e);
    expect(grpcCode(err)).toBe(3); // INVALID_ARGUMENT

    // Through the gateway: a blob swapped between ids is refused at KMS.
    const b = JSON.parse(await readFile(join(keys, fileNameFor('gcp/b')), 'utf8'));
    b.versions[0].wrapped = a.versions[0].wrapped;
    await writeFile(join(keys, fileNameFor('gcp/b')), JSON.stringify(b));
    const gw2 = await gateway(dir);
    const c = await rawConnect(gw2.socketPath as string);
    expect(await c.ask('GET gcp/b')).toBe('ERR DECRYPT_FAILED Cloud KMS: the wrapped key does not decrypt under this KEK and AAD');
    expect(ok(await c.ask('GET gcp/a'))).toBe(dekA.toString('base64'));
    c.close();
  });

  it('a new primary CryptoKeyVersion leaves old blobs readable and wraps new DEK versions', async () => {
    const key = await newKey();
    const kms = admin();
    const dir = await tmp();
    const gw = await gateway(dir);
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('gcp/rot', key.uri);
    const v1 = await cl.get('gcp/rot');
    const env = await cl.enc('gcp/rot', Buffer.from('under kek v1'));
    const [created] = await kms.createCryptoKeyVersion({ parent: key.name, cryptoKeyVersion: {} });
    await kms.updateCryptoKeyPrimaryVersion({ name: key.name, cryptoKeyVersionId: (created.name as string).split('/').pop() as string });
    expect(await cl.rotate('gcp/rot')).toBe(2);
    gw.cache.clear();
    expect((await cl.get('gcp/rot@1')).equals(v1)).toBe(true);
    expect((await cl.dec('gcp/rot', env)).toString()).toBe('under kek v1');
    const info = (await cl.info('gcp/rot')) as { versions: Array<{ kekVersion: string }> };
    expect(info.versions.map((v) => v.kekVersion)).toEqual([`${key.name}/cryptoKeyVersions/1`, created.name]);
    await cl.close();
  });

  it('a disabled CryptoKeyVersion gives KMS_DENIED for blobs it wrapped', async () => {
    const key = await newKey();
    const kms = admin();
    const dir = await tmp();
    const gw = await gateway(dir);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE gcp/dis ${key.uri}`);
    gw.cache.clear();
    await kms.updateCryptoKeyVersion({
      cryptoKeyVersion: { name: `${key.name}/cryptoKeyVersions/1`, state: 'DISABLED' },
      updateMask: { paths: ['state'] },
    });
    expect(await c.ask('GET gcp/dis')).toBe('ERR KMS_DENIED Cloud KMS: the KEK version is disabled or destroyed');
    await kms.updateCryptoKeyVersion({
      cryptoKeyVersion: { name: `${key.name}/cryptoKeyVersions/1`, state: 'ENABLED' },
      updateMask: { paths: ['state'] },
    });
    expect(await c.ask('GET gcp/dis')).toMatch(/^OK /);
    c.close();
  });

  it('ENC/DEC through a GCP-wrapped DEK', async () => {
    const key = await newKey();
    const dir = await tmp();
    const gw = await gateway(dir);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE gcp/col ${key.uri}`);
    const env = ok(await c.ask(`ENC gcp/col ${b64('4111 1111 1111 1111')} ${b64('cards:7')}`));
    gw.cache.clear();
    expect(await c.ask(`DEC gcp/col ${env} ${b64('cards:7')}`)).toBe(`OK ${b64('4111 1111 1111 1111')}`);
    expect(await c.ask(`DEC gcp/col ${env} ${b64('cards:8')}`)).toMatch(/^ERR DECRYPT_FAILED /);
    c.close();
  });
});

describe('Google Cloud KMS failures (an emulator of its own)', () => {
  let emu: GcpKmsEmulator;
  beforeAll(async () => {
    emu = await startGcpKmsEmulator();
  });
  afterAll(async () => {
    await emu?.dispose();
  });
  afterEach(() => emu.setFaults(null));

  it('maps PERMISSION_DENIED, RESOURCE_EXHAUSTED and a slow KMS to protocol codes', async () => {
    const key = await newKey(emu.endpoint);
    const dir = await tmp();
    const gw = await gateway(dir, emu.endpoint, 300);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE gcp/f ${key.uri}`);
    gw.cache.clear();
    emu.setFaults({ PERMISSION_DENIED: [key.name] });
    expect(await c.ask('GET gcp/f')).toBe('ERR KMS_DENIED Cloud KMS: permission denied on the KEK');
    emu.setFaults({ RESOURCE_EXHAUSTED: [key.name] });
    expect(await c.ask('GET gcp/f')).toBe('ERR THROTTLED Cloud KMS: quota exceeded');
    emu.setFaults({ DELAY_MS: 2000 });
    const started = performance.now();
    expect(await c.ask('GET gcp/f')).toMatch(/^ERR KMS_UNAVAILABLE /);
    expect(performance.now() - started).toBeLessThan(1500);
    emu.setFaults(null);
    expect(await c.ask('GET gcp/f')).toMatch(/^OK /);
    c.close();
  });

  it('a stopped emulator gives KMS_UNAVAILABLE within the deadline; cached keys keep working; it recovers', async () => {
    const key = await newKey(emu.endpoint);
    const dir = await tmp();
    // 3 s: room for the gRPC channel to reconnect (≤ ~1.2 s backoff) inside one call after the restart.
    const gw = await gateway(dir, emu.endpoint, 3000);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE gcp/warm ${key.uri}`);
    await c.ask(`CREATE gcp/cold ${key.uri}`);
    const cold = ok(await c.ask('GET gcp/cold'));
    gw.cache.evict('gcp/cold', 1);
    await emu.stop();
    const started = performance.now();
    expect(await c.ask('GET gcp/cold')).toMatch(/^ERR KMS_UNAVAILABLE /);
    expect(performance.now() - started).toBeLessThan(3000 + 1000);
    expect(await c.ask('GET gcp/warm')).toMatch(/^OK /);
    await emu.start();
    expect(ok(await c.ask('GET gcp/cold'))).toBe(cold);
    c.close();
  });

  it('uses CRC32C both ways: a corrupted request is refused by the KMS', async () => {
    // The emulator checks the request CRC32C fields like Cloud KMS: a wrong checksum is INVALID_ARGUMENT.
    const key = await newKey(emu.endpoint);
    const kms = admin(emu.endpoint);
    const data = Buffer.alloc(32, 1);
    const err = await kms.encrypt({ name: key.name, plaintext: data, plaintextCrc32c: { value: crc32c(data) ^ 1 } }).catch((e: unknown) => e);
    expect(grpcCode(err)).toBe(3);
    const [good] = await kms.encrypt({ name: key.name, plaintext: data, plaintextCrc32c: { value: crc32c(data) } });
    expect(good.verifiedPlaintextCrc32c).toBe(true);
  });
});
