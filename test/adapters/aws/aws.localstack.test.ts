import {
  CreateAliasCommand,
  CreateKeyCommand,
  DecryptCommand,
  DisableKeyCommand,
  EnableKeyCommand,
  KMSClient,
  RotateKeyOnDemandCommand,
} from '@aws-sdk/client-kms';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createClient } from '../../../src/client/index.js';
import { fileNameFor } from '../../../src/keystore/file-store.js';
import { okPayload as ok, b64, rawConnect, startTestGateway, useRunningGateways, type TestGateway } from '../../helpers/gateway.js';
import { createKek, startLocalStack, type LocalStackInstance } from '../../helpers/localstack.js';
import { useTmpDirs } from '../../helpers/tmp.js';

// LocalStack accepts any credentials; the gateway reads them through the SDK's default chain.
process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';

const ls = inject('localstack');
const tmp = useTmpDirs();
const running = useRunningGateways();
const sdk = new KMSClient({ endpoint: ls.endpoint, region: ls.region, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });

afterAll(() => sdk.destroy());

/** A manual clock for the DEK cache's TTL. */
function manualClock(start = 1_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

async function gateway(dir: string, endpoint = ls.endpoint, extra: { clock?: { now(): number }; timeoutMs?: number } = {}) {
  const gw = await startTestGateway(
    dir,
    {
      keys: { autoCreate: false },
      kms: { timeoutMs: extra.timeoutMs ?? 2000, adapters: { 'aws-kms': { endpoint, region: ls.region } } },
    },
    extra.clock ? { clock: extra.clock } : {},
  );
  running.push(gw);
  return gw;
}

async function freshKek(endpoint = ls.endpoint): Promise<string> {
  return createKek(endpoint);
}


describe('AWS KMS adapter against LocalStack', () => {
  it('CREATE, GET, restart with an empty cache, GET: same DEK, one adapter call per restart', async () => {
    const dir = await tmp();
    const kek = `aws-kms://${ls.keyA}`;
    const gw = await gateway(dir);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`CREATE pg/cluster-1 ${kek}`)).toBe('OK 1');
    const dek = ok(await c.ask('GET pg/cluster-1'));
    expect(ok(await c.ask('GET pg/cluster-1'))).toBe(dek);
    expect(gw.adapterCalls).toEqual([{ op: 'generate', kek }]);
    c.close();
    await gw.close();
    running.pop();

    const gw2 = await gateway(dir);
    const c2 = await rawConnect(gw2.socketPath as string);
    expect(ok(await c2.ask('GET pg/cluster-1'))).toBe(dek);
    expect(ok(await c2.ask('GET pg/cluster-1'))).toBe(dek);
    expect(gw2.adapterCalls).toEqual([{ op: 'unwrap', kek }]);
    const info = JSON.parse(ok(await c2.ask('INFO pg/cluster-1')));
    expect(info.versions[0]).toMatchObject({ kek, kekVersion: ls.keyA });
    c2.close();
  });

  it('the stored blob opens with the SDK and the right EncryptionContext only', async () => {
    const dir = await tmp();
    const gw = await gateway(dir);
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('app/users', `aws-kms://${ls.aliasA}`);
    const dek = await cl.get('app/users');
    await cl.close();
    const stored = JSON.parse(await readFile(join(dir, 'data', 'keys', fileNameFor('app/users')), 'utf8'));
    const blob = Buffer.from(stored.versions[0].wrapped, 'base64');
    const out = await sdk.send(
      new DecryptCommand({ KeyId: ls.aliasA, CiphertextBlob: blob, EncryptionContext: { 'kmsgw:key-id': 'app/users', 'kmsgw:version': '1' } }),
    );
    expect(Buffer.from(out.Plaintext as Uint8Array).equals(dek)).toBe(true);
    const wrongContexts: Array<Record<string, string>> = [
      { 'kmsgw:key-id': 'app/other', 'kmsgw:version': '1' },
      { 'kmsgw:key-id': 'app/users', 'kmsgw:version': '2' },
      {},
    ];
    for (const wrong of wrongContexts) {
      await expect(sdk.send(new DecryptCommand({ KeyId: ls.aliasA, CiphertextBlob: blob, EncryptionContext: wrong }))).rejects.toMatchObject({
        name: 'InvalidCiphertextException',
      });
    }
  });

  it('a blob moved to another key id is refused by KMS', async () => {
    const dir = await tmp();
    const gw = await gateway(dir);
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('a', `aws-kms://${ls.keyA}`);
    await cl.create('b', `aws-kms://${ls.keyA}`);
    await cl.close();
    await gw.close();
    running.pop();
    const keys = join(dir, 'data', 'keys');
    const a = JSON.parse(await readFile(join(keys, 'a.json'), 'utf8'));
    const b = JSON.parse(await readFile(join(keys, 'b.json'), 'utf8'));
    a.versions[0].wrapped = b.versions[0].wrapped;
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(keys, 'a.json'), JSON.stringify(a));
    const gw2 = await gateway(dir);
    const c = await rawConnect(gw2.socketPath as string);
    expect(await c.ask('GET a')).toBe('ERR DECRYPT_FAILED AWS KMS: the wrapped key does not decrypt under this KEK and context');
    expect(await c.ask('GET b')).toMatch(/^OK /);
    c.close();
  });

  it('an alias KEK survives RotateKeyOnDemand: old DEKs stay readable, new ones work', async () => {
    const arn = await freshKek();
    const alias = `alias/kmsgw-rot-${Date.now()}`;
    await sdk.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: arn }));
    const dir = await tmp();
    const gw = await gateway(dir);
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('rot/key', `aws-kms://${alias}`);
    const v1 = await cl.get('rot/key');
    const env1 = await cl.enc('rot/key', Buffer.from('before rotation'));
    await sdk.send(new RotateKeyOnDemandCommand({ KeyId: arn }));
    expect(await cl.rotate('rot/key')).toBe(2);
    const v2 = await cl.get('rot/key');
    gw.cache.clear();
    expect((await cl.get('rot/key@1')).equals(v1)).toBe(true);
    expect((await cl.get('rot/key@2')).equals(v2)).toBe(true);
    expect((await cl.dec('rot/key', env1)).toString()).toBe('before rotation');
    await cl.close();
  });

  it('REWRAP to another KEK uses ReEncrypt; disabling the old KEK then does not matter', async () => {
    const oldKek = await freshKek();
    const newKek = await freshKek();
    const dir = await tmp();
    const gw = await gateway(dir);
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('move/me', `aws-kms://${oldKek}`);
    await cl.rotate('move/me');
    const deks = [await cl.get('move/me@1'), await cl.get('move/me@2')];
    const before = gw.adapterCalls.length;
    expect(await cl.rewrap('move/me', `aws-kms://${newKek}`)).toBe(2);
    const calls = gw.adapterCalls.slice(before);
    // Per version: one ReEncrypt at the old KEK, one verifying unwrap at the new; no unwrap at the old.
    expect(calls.filter((x) => x.op === 'rewrap')).toEqual([
      { op: 'rewrap', kek: `aws-kms://${oldKek}` },
      { op: 'rewrap', kek: `aws-kms://${oldKek}` },
    ]);
    expect(calls.filter((x) => x.op === 'unwrap' && x.kek === `aws-kms://${oldKek}`)).toEqual([]);
    await sdk.send(new DisableKeyCommand({ KeyId: oldKek }));
    gw.cache.clear();
    expect((await cl.get('move/me@1')).equals(deks[0] as Buffer)).toBe(true);
    expect((await cl.get('move/me@2')).equals(deks[1] as Buffer)).toBe(true);
    const info = (await cl.info('move/me')) as { versions: Array<{ kek: string; kekVersion: string }> };
    expect(info.versions.map((v) => v.kekVersion)).toEqual([newKek, newKek]);
    await cl.close();
  });

  it('a disabled KEK: cold GET is KMS_DENIED; a cached DEK is served until its TTL, then refused', async () => {
    const arn = await freshKek();
    const clock = manualClock();
    const dir = await tmp();
    const gw = await gateway(dir, ls.endpoint, { clock });
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE warm/key aws-kms://${arn}`);
    await c.ask(`CREATE cold/key aws-kms://${arn}`);
    gw.cache.evict('cold/key', 1);
    await sdk.send(new DisableKeyCommand({ KeyId: arn }));
    expect(await c.ask('GET cold/key')).toBe('ERR KMS_DENIED AWS KMS: the KEK is disabled');
    expect(await c.ask('GET warm/key')).toMatch(/^OK /);
    clock.advance(299_000);
    expect(await c.ask('GET warm/key')).toMatch(/^OK /);
    clock.advance(2_000);
    expect(await c.ask('GET warm/key')).toBe('ERR KMS_DENIED AWS KMS: the KEK is disabled');
    await sdk.send(new EnableKeyCommand({ KeyId: arn }));
    expect(await c.ask('GET warm/key')).toMatch(/^OK /);
    c.close();
  });

  it('ENC/DEC through an AWS-wrapped DEK; versions under two KEKs both decrypt', async () => {
    const dir = await tmp();
    const gw = await gateway(dir);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE col/email aws-kms://${ls.keyA}`);
    const e1 = ok(await c.ask(`ENC col/email ${b64('alice@example.com')} ${b64('users:1')}`));
    expect(await c.ask(`ROTATE col/email aws-kms://${ls.keyB}`)).toBe('OK 2');
    const e2 = ok(await c.ask(`ENC col/email ${b64('bob@example.com')} ${b64('users:2')}`));
    gw.cache.clear();
    expect(await c.ask(`DEC col/email ${e1} ${b64('users:1')}`)).toBe(`OK ${b64('alice@example.com')}`);
    expect(await c.ask(`DEC col/email ${e2} ${b64('users:2')}`)).toBe(`OK ${b64('bob@example.com')}`);
    expect(await c.ask(`DEC col/email ${e2} ${b64('users:1')}`)).toMatch(/^ERR DECRYPT_FAILED /);
    const info = JSON.parse(ok(await c.ask('INFO col/email')));
    expect(info.versions.map((v: { kek: string }) => v.kek)).toEqual([`aws-kms://${ls.keyA}`, `aws-kms://${ls.keyB}`]);
    c.close();
  });
});

describe('AWS KMS outage (a LocalStack of its own, stopped mid-test)', () => {
  let instance: LocalStackInstance;
  beforeAll(async () => {
    instance = await startLocalStack();
  }, 180_000);
  afterAll(async () => {
    await instance?.stop();
  });

  it('a stopped KMS gives KMS_UNAVAILABLE within the timeout; cached keys keep working; it recovers without a restart', async () => {
    // Fixed id and key material, so the KEK can be re-created after the restart (LocalStack keeps no state).
    const customId = '7f1c3a52-9e0b-4d7e-a8a5-2b3c4d5e6f70';
    const material = Buffer.alloc(32, 0x42).toString('base64');
    const arn = await createKek(instance.endpoint, { customId, customKeyMaterial: material });
    const dir = await tmp();
    const gw = await gateway(dir, instance.endpoint, { timeoutMs: 1500 });
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE out/warm aws-kms://${arn}`);
    await c.ask(`CREATE out/cold aws-kms://${arn}`);
    const cold = ok(await c.ask('GET out/cold'));
    gw.cache.evict('out/cold', 1);

    await instance.stop();
    const started = performance.now();
    expect(await c.ask('GET out/cold')).toMatch(/^ERR KMS_UNAVAILABLE /);
    expect(performance.now() - started).toBeLessThan(1500 + 1000);
    expect(await c.ask('GET out/warm')).toMatch(/^OK /);

    await instance.start();
    await createKek(instance.endpoint, { customId, customKeyMaterial: material });
    expect(ok(await c.ask('GET out/cold'))).toBe(cold);
    c.close();
  }, 180_000);
});
