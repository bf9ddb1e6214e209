import {
  CreateAliasCommand,
  DecryptCommand,
  DisableKeyCommand,
  EnableKeyCommand,
  KMSClient,
  RotateKeyOnDemandCommand,
} from '@aws-sdk/client-kms';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import aws from '../../../adapters/aws/index.js';
import { createClient } from '../../../src/client/index.js';
import { fileNameFor } from '../../../src/keystore/file/index.js';
import { useRunningGateways } from '../../helpers/gateway.js';
import { createKek, startLocalStack } from '../../helpers/localstack.js';
import { useTmpDirs } from '../../helpers/tmp.js';
import {
  describeKeyWrapperConformance,
  startHarnessGateway,
  type ConformanceHarness,
  type KmsTarget,
  type StoppableTarget,
} from '../conformance.js';

// LocalStack accepts any credentials; the gateway reads them through the SDK's default chain.
process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';

const ls = inject('localstack');
const tmp = useTmpDirs();
const running = useRunningGateways();
const sdk = new KMSClient({ endpoint: ls.endpoint, region: ls.region, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });

afterAll(() => sdk.destroy());

const settings = (endpoint: string) => ({ 'aws-kms': { endpoint, region: ls.region } });

let seq = 0;
/** KEKs named by alias (INFO then records the key ARN behind it), in the shared LocalStack, reached at `endpoint`. */
const shared = (endpoint: string): KmsTarget => ({
  adapters: settings(endpoint),
  newKek: async () => {
    const arn = await createKek(ls.endpoint);
    const alias = `alias/kmsgw-conf-${Date.now()}-${seq++}`;
    await sdk.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: arn }));
    return { uri: `aws-kms://${alias}`, kekVersion: arn };
  },
});

/** A LocalStack of its own. It keeps no state, so each KEK gets a fixed id and key material to re-create after a restart. */
async function ownLocalStack(): Promise<StoppableTarget> {
  const instance = await startLocalStack();
  const made: Array<{ customId: string; customKeyMaterial: Buffer }> = [];
  return {
    adapters: settings(instance.endpoint),
    newKek: async () => {
      const kek = { customId: randomUUID(), customKeyMaterial: randomBytes(32) };
      made.push(kek);
      const arn = await createKek(instance.endpoint, kek);
      return { uri: `aws-kms://${arn}`, kekVersion: arn };
    },
    stop: () => instance.stop(),
    start: async () => {
      await instance.start();
      for (const kek of made) await createKek(instance.endpoint, kek);
    },
    dispose: () => instance.stop(),
  };
}

const harness: ConformanceHarness = {
  scheme: 'aws-kms',
  module: aws,
  target: shared(ls.endpoint),
  generates: true,
  bindsContext: true,
  movedBlobReply: 'ERR DECRYPT_FAILED AWS KMS: the wrapped key does not decrypt under this KEK and context',
  disable: {
    off: async (kek) => void (await sdk.send(new DisableKeyCommand({ KeyId: kek.kekVersion }))),
    on: async (kek) => void (await sdk.send(new EnableKeyCommand({ KeyId: kek.kekVersion }))),
    reply: 'ERR KMS_DENIED AWS KMS: the KEK is disabled',
  },
  // New key material behind the same key ARN: an alias KEK keeps working.
  rotate: async (kek) => {
    await sdk.send(new RotateKeyOnDemandCommand({ KeyId: kek.kekVersion }));
    return kek.kekVersion;
  },
  outage: { open: ownLocalStack, timeoutMs: 1500, reply: /^ERR KMS_UNAVAILABLE / },
  relay: { upstreamPort: Number(new URL(ls.endpoint).port), via: (port) => shared(`http://127.0.0.1:${port}`) },
};

describeKeyWrapperConformance('AWS KMS (LocalStack)', harness);

describe('AWS KMS adapter against LocalStack', () => {
  async function gateway(dir: string) {
    const gw = await startHarnessGateway(harness, dir);
    running.push(gw);
    return gw;
  }

  it('the stored blob opens with the SDK and the right EncryptionContext only', async () => {
    const dir = await tmp();
    const gw = await gateway(dir);
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('app/users', `aws-kms://${ls.aliasA}`);
    const dek = await cl.get('app/users');
    await cl.close();
    const stored = JSON.parse(await readFile(join(dir, 'data', 'keys', fileNameFor('app/users')), 'utf8'));
    const blob = Buffer.from(stored.versions[0].wraps[0].wrapped, 'base64');
    const out = await sdk.send(
      new DecryptCommand({
        KeyId: ls.aliasA,
        CiphertextBlob: blob,
        EncryptionContext: { 'kmsgw:key-id': 'app/users', 'kmsgw:version': '1' },
      }),
    );
    expect(Buffer.from(out.Plaintext as Uint8Array).equals(dek)).toBe(true);
    const wrongContexts: Array<Record<string, string>> = [
      { 'kmsgw:key-id': 'app/other', 'kmsgw:version': '1' },
      { 'kmsgw:key-id': 'app/users', 'kmsgw:version': '2' },
      {},
    ];
    for (const wrong of wrongContexts) {
      await expect(
        sdk.send(new DecryptCommand({ KeyId: ls.aliasA, CiphertextBlob: blob, EncryptionContext: wrong })),
      ).rejects.toMatchObject({
        name: 'InvalidCiphertextException',
      });
    }
  });

  it('REWRAP to another KEK uses ReEncrypt; disabling the old KEK then does not matter', async () => {
    const oldKek = await createKek(ls.endpoint);
    const newKek = await createKek(ls.endpoint);
    const gw = await gateway(await tmp());
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
    const info = (await cl.info('move/me')) as { versions: Array<{ keks: Array<{ kek: string; kekVersion: string }> }> };
    expect(info.versions.map((v) => v.keks.map((k) => k.kekVersion))).toEqual([[newKek], [newKek]]);
    await cl.close();
  });
});
