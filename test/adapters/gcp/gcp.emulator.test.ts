import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyManagementServiceClient } from '@google-cloud/kms';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import gcp, { wrapAad } from '../../../adapters/gcp/index.js';
import { createClient } from '../../../src/client/index.js';
import { crc32c } from '../../../src/crypto/crc32c.js';
import { fileNameFor } from '../../../src/keystore/file/index.js';
import { adminClient, createKey, grpcCode, startGcpKmsEmulator, type GcpKmsEmulator, type GcpKmsEndpoint } from '../../helpers/gcp-kms.js';
import { okPayload as ok, rawConnect, useRunningGateways } from '../../helpers/gateway.js';
import { useTmpDirs } from '../../helpers/tmp.js';
import {
  describeKeyWrapperConformance,
  startHarnessGateway,
  type ConformanceHarness,
  type KmsTarget,
  type StoppableTarget,
} from '../conformance.js';

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

const kms = admin();
let seq = 0;

/** KEKs made with `keys` (an admin client of the KMS that holds them), reached by the adapter at `port`. */
function target(keys: KeyManagementServiceClient, port: number): KmsTarget {
  return {
    adapters: { 'gcp-kms': { endpoint: `127.0.0.1:${port}`, tls: false } },
    newKek: async () => {
      const name = await createKey(keys, { keyRing: 'kmsgw', key: `k${Date.now()}-${seq++}` });
      return { uri: `gcp-kms://${name}`, kekVersion: `${name}/cryptoKeyVersions/1` };
    },
  };
}

async function ownEmulator(): Promise<StoppableTarget> {
  const emu = await startGcpKmsEmulator();
  return {
    ...target(admin(emu.endpoint), emu.endpoint.port),
    stop: () => emu.stop(),
    start: () => emu.start(),
    dispose: () => emu.dispose(),
  };
}

const setVersionState = (kek: { kekVersion?: string }, state: 'ENABLED' | 'DISABLED') =>
  kms.updateCryptoKeyVersion({ cryptoKeyVersion: { name: kek.kekVersion as string, state }, updateMask: { paths: ['state'] } });

const harness: ConformanceHarness = {
  scheme: 'gcp-kms',
  module: gcp,
  target: target(kms, shared.port),
  generates: false,
  bindsContext: true,
  movedBlobReply: 'ERR DECRYPT_FAILED Cloud KMS: the wrapped key does not decrypt under this KEK and AAD',
  disable: {
    off: async (kek) => void (await setVersionState(kek, 'DISABLED')),
    on: async (kek) => void (await setVersionState(kek, 'ENABLED')),
    reply: 'ERR KMS_DENIED Cloud KMS: the KEK version is disabled or destroyed',
  },
  // A new primary CryptoKeyVersion.
  rotate: async (kek) => {
    const name = kek.uri.slice('gcp-kms://'.length);
    const [created] = await kms.createCryptoKeyVersion({ parent: name, cryptoKeyVersion: {} });
    await kms.updateCryptoKeyPrimaryVersion({ name, cryptoKeyVersionId: (created.name as string).split('/').pop() as string });
    expect(created.name).not.toBe(kek.kekVersion);
    return created.name as string;
  },
  // 3 s: room for the gRPC channel to reconnect (≤ ~1.2 s backoff) inside one call after the restart.
  outage: { open: ownEmulator, timeoutMs: 3000, reply: /^ERR KMS_UNAVAILABLE / },
  relay: { upstreamPort: shared.port, via: (port) => target(kms, port) },
};

describeKeyWrapperConformance('Google Cloud KMS (emulator)', harness);

describe('Google Cloud KMS adapter against the emulator', () => {
  it('the stored blob is bound to key id and version by its AAD', async () => {
    const key = await harness.target.newKek();
    const name = key.uri.slice('gcp-kms://'.length);
    const dir = await tmp();
    const gw = await startHarnessGateway(harness, dir);
    running.push(gw);
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('gcp/a', key.uri);
    const dekA = await cl.get('gcp/a');
    await cl.close();

    const a = JSON.parse(await readFile(join(dir, 'data', 'keys', fileNameFor('gcp/a')), 'utf8'));
    const blob = Buffer.from(a.versions[0].wraps[0].wrapped, 'base64');
    // Directly with the SDK: the right AAD opens it, another id's AAD does not.
    const right = wrapAad({ keyId: 'gcp/a', version: 1 });
    const [res] = await kms.decrypt({ name, ciphertext: blob, additionalAuthenticatedData: right });
    expect(Buffer.from(res.plaintext as Uint8Array).equals(dekA)).toBe(true);
    const wrong = wrapAad({ keyId: 'gcp/b', version: 1 });
    const err = await kms.decrypt({ name, ciphertext: blob, additionalAuthenticatedData: wrong }).catch((e: unknown) => e);
    expect(grpcCode(err)).toBe(3); // INVALID_ARGUMENT
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
    const own = target(admin(emu.endpoint), emu.endpoint.port);
    const key = await own.newKek();
    const name = key.uri.slice('gcp-kms://'.length);
    const gw = await startHarnessGateway(harness, await tmp(), { target: own, timeoutMs: 300 });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE gcp/f ${key.uri}`);
    gw.cache.clear();
    emu.setFaults({ PERMISSION_DENIED: [name] });
    expect(await c.ask('GET gcp/f')).toBe('ERR KMS_DENIED Cloud KMS: permission denied on the KEK');
    emu.setFaults({ RESOURCE_EXHAUSTED: [name] });
    expect(await c.ask('GET gcp/f')).toBe('ERR THROTTLED Cloud KMS: quota exceeded');
    emu.setFaults({ DELAY_MS: 2000 });
    const started = performance.now();
    expect(await c.ask('GET gcp/f')).toMatch(/^ERR KMS_UNAVAILABLE /);
    expect(performance.now() - started).toBeLessThan(1500);
    emu.setFaults(null);
    expect(ok(await c.ask('GET gcp/f'))).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    c.close();
  });

  it('uses CRC32C both ways: a corrupted request is refused by the KMS', async () => {
    // The emulator checks the request CRC32C fields like Cloud KMS: a wrong checksum is INVALID_ARGUMENT.
    const client = admin(emu.endpoint);
    const key = await target(client, emu.endpoint.port).newKek();
    const name = key.uri.slice('gcp-kms://'.length);
    const data = Buffer.alloc(32, 1);
    const err = await client.encrypt({ name, plaintext: data, plaintextCrc32c: { value: crc32c(data) ^ 1 } }).catch((e: unknown) => e);
    expect(grpcCode(err)).toBe(3);
    const [good] = await client.encrypt({ name, plaintext: data, plaintextCrc32c: { value: crc32c(data) } });
    expect(good.verifiedPlaintextCrc32c).toBe(true);
  });
});
