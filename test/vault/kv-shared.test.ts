// KV v2 secrets in a shared S3 key store (LocalStack S3, KEK in LocalStack KMS): a standby's front
// door reads what the primary's stored, and the object store never holds a secret's plaintext.
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, inject, it } from 'vitest';
import { startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { listNames, useS3Bucket } from '../helpers/s3.js';
import { useTmpDirs } from '../helpers/tmp.js';

const ls = inject('localstack');
process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';
const tmp = useTmpDirs();
const running = useRunningGateways();
const { sdk, bucket } = await useS3Bucket(ls.endpoint, ls.region, 'kmsgw-kv');

async function host() {
  const gw = await startTestGateway(await tmp(), {
    keystore: { url: `s3://${bucket}/kv/`, endpoint: ls.endpoint, forcePathStyle: true, region: ls.region, refreshMs: 0 },
    keys: { defaultKek: `aws-kms://${ls.keyA}`, autoCreate: false },
    kms: { adapters: { 'aws-kms': { endpoint: ls.endpoint, region: ls.region } } },
    vault: { listen: '127.0.0.1:0', insecure: true },
  });
  running.push(gw);
  const base = `http://127.0.0.1:${gw.vault?.port as number}/v1/secret`;
  return {
    gw,
    async call(method: string, path: string, body?: unknown) {
      const res = await fetch(`${base}/${path}`, {
        method,
        headers: { 'X-Vault-Token': 'dev', 'Content-Type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: res.status, json: (await res.json().catch(() => null)) as { data?: { data?: unknown; version?: number } } | null };
    },
  };
}

describe('KV v2 secrets in a shared object store', () => {
  it("a standby reads the primary's secrets, and S3 holds only sealed values and KMS-wrapped DEKs", async () => {
    const primary = await host();
    const standby = await host();
    const key = Buffer.alloc(32, 0x5a).toString('base64');
    expect((await primary.call('POST', 'data/pg_tde/principal', { data: { key } })).json?.data?.version).toBe(1);
    expect((await standby.call('GET', 'data/pg_tde/principal')).json?.data?.data).toEqual({ key });
    expect((await standby.call('POST', 'data/pg_tde/principal', { data: { key: 'second' }, options: { cas: 1 } })).status).toBe(200);
    expect((await primary.call('GET', 'data/pg_tde/principal')).json?.data?.data).toEqual({ key: 'second' });
    const names = await listNames(sdk, bucket);
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) {
      const body = await (await sdk.send(new GetObjectCommand({ Bucket: bucket, Key: name }))).Body?.transformToString('latin1');
      expect(body).not.toContain(key);
      expect(body).not.toContain('second');
      expect(body).not.toContain('"key"');
    }
  });
});
