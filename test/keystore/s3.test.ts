// The S3 key store against LocalStack's S3 (the shared instance of test/setup/localstack.ts): the backend
// conformance suite, plus what only S3 has: endpoint and region resolution, error classification, and
// the safety of StoreError messages.
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, afterEach, describe, expect, inject, it, vi } from 'vitest';
import { StoreError, type StoreBackend } from '../../src/keystore/backend.js';
import type { BackendSettings } from '../../src/keystore/open.js';
import { open } from '../../src/keystore/s3/index.js';
import { freePort } from '../helpers/net.js';
import { useS3Bucket } from '../helpers/s3.js';
import { describeBackendConformance } from './conformance.js';

const ls = inject('localstack');
// LocalStack accepts any credentials; the backend reads them through the SDK's default chain.
process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';

const settings: BackendSettings = { endpoint: ls.endpoint, forcePathStyle: true, region: ls.region };
// A reused LocalStack lives on: the helper leaves no bucket behind.
const { sdk, bucket } = await useS3Bucket(ls.endpoint, ls.region, 'kmsgw-s3-test');

const prefixes = new Map<StoreBackend, string>();
const opened: StoreBackend[] = [];
afterAll(async () => {
  await Promise.allSettled(opened.map((b) => b.close()));
});

async function openAt(prefix: string, with_: Partial<BackendSettings> = {}, readOnly = false): Promise<StoreBackend> {
  const backend = await open({ kind: 's3', bucket, prefix }, { ...settings, ...with_ }, { readOnly });
  prefixes.set(backend, prefix);
  opened.push(backend);
  return backend;
}

const newPrefix = (): string => `t-${randomUUID().slice(0, 8)}/`;

describeBackendConformance({
  name: 's3 (LocalStack)',
  // Every location is a new prefix in the one bucket; `same` is a second client of it, as another host.
  open: (same) => openAt(same === undefined ? newPrefix() : (prefixes.get(same) as string)),
  unreachable: async () => openAt(newPrefix(), { endpoint: `http://127.0.0.1:${await freePort()}` }),
  putForeign: async (backend, name, body) => {
    await sdk.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefixes.get(backend)}${name}`, Body: body }));
  },
});

const signal = (): AbortSignal => AbortSignal.timeout(5_000);
const body = (text: string): Buffer => Buffer.from(text, 'utf8');

/** What a call rejected with, as a StoreError. */
async function storeErrorOf(call: Promise<unknown>): Promise<StoreError> {
  const err = await call.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StoreError);
  return err as StoreError;
}

async function listAll(backend: StoreBackend, prefix = ''): Promise<string[]> {
  const ids: string[] = [];
  for await (const item of backend.list(prefix, signal())) ids.push(item.id);
  return ids.sort();
}

/** A local HTTP server answering every request with `answer` (or never, when it is undefined). */
async function fakeServer(answer?: { status: number; xml: string }): Promise<{ endpoint: string; server: Server }> {
  const server = createServer((req, res) => {
    req.resume();
    if (answer === undefined) return; // hangs
    res.writeHead(answer.status, { 'content-type': 'application/xml', 'x-amz-request-id': 'fake' });
    res.end(answer.xml);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

describe('s3 key store', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it('names its location without endpoint or credentials', async () => {
    const b = await openAt('a/b/');
    expect(b.location).toBe(`s3://${bucket}/a/b/`);
  });

  it('uses AWS_ENDPOINT_URL_S3 and falls back to us-east-1 when neither settings nor the SDK chain give one', async () => {
    vi.stubEnv('AWS_ENDPOINT_URL_S3', ls.endpoint);
    vi.stubEnv('AWS_REGION', undefined);
    vi.stubEnv('AWS_PROFILE', undefined);
    vi.stubEnv('AWS_CONFIG_FILE', '/nonexistent/kmsgw-test-aws-config');
    const prefix = newPrefix();
    const viaEnv = await open({ kind: 's3', bucket, prefix }, { forcePathStyle: true });
    opened.push(viaEnv);
    expect(await viaEnv.write('env', body('{}'), null, signal())).toMatchObject({ ok: true });
    // The configured endpoint wins over the variable.
    vi.stubEnv('AWS_ENDPOINT_URL_S3', `http://127.0.0.1:${await freePort()}`);
    const configured = await openAt(prefix);
    expect((await configured.read('env', signal()))?.body.toString('utf8')).toBe('{}');
  });

  it('refuses writes when opened read-only, and reads', async () => {
    const prefix = newPrefix();
    await (await openAt(prefix)).write('k', body('1'), null, signal());
    const ro = await openAt(prefix, {}, true);
    expect((await ro.read('k', signal()))?.body.toString('utf8')).toBe('1');
    expect((await storeErrorOf(ro.write('k2', body('2'), null, signal()))).message).toBe('key store was opened read-only');
    expect(await ro.read('k2', signal())).toBeUndefined();
  });

  it('fails every call after close()', async () => {
    const b = await openAt(newPrefix());
    await b.close();
    await b.close();
    await storeErrorOf(b.read('k', signal()));
    await storeErrorOf(b.write('k', body('1'), null, signal()));
    await storeErrorOf(listAll(b));
  });

  it('lists only its own prefix, not a nested one of another gateway', async () => {
    const outer = await openAt(newPrefix());
    const inner = await openAt(`${prefixes.get(outer)}nested/`);
    await outer.write('mine', body('{}'), null, signal());
    await inner.write('theirs', body('{}'), null, signal());
    expect(await listAll(outer)).toEqual(['mine']);
    expect(await listAll(inner)).toEqual(['theirs']);
  });

  it('names a missing bucket on every call, and a write to it is no lost race', async () => {
    const missing = `kmsgw-missing-${randomUUID().slice(0, 8)}`;
    const b = await open({ kind: 's3', bucket: missing, prefix: '' }, settings);
    opened.push(b);
    const want = `S3 bucket ${missing} does not exist`;
    expect((await storeErrorOf(b.read('k', signal()))).message).toBe(want);
    expect((await storeErrorOf(b.write('k', body('1'), null, signal()))).message).toBe(want);
    expect((await storeErrorOf(b.write('k', body('1'), '"0123"', signal()))).message).toBe(want);
    const listed = await storeErrorOf(listAll(b));
    expect(listed.message).toBe(want);
    expect((listed.cause as { name?: string }).name).toBe('NoSuchBucket');
  });

  it('classifies denied access and server errors by code, never passing on the server message or the secret key', async () => {
    const secret = `kmsgw-secret-${randomUUID()}`;
    vi.stubEnv('AWS_ACCESS_KEY_ID', 'AKIAKMSGWTEST');
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', secret);
    // A server that echoes the secret in its message (a debugging proxy, a hostile endpoint).
    const echo = (code: string): string => `<Error><Code>${code}</Code><Message>bad key ${secret}</Message></Error>`;
    for (const [status, code, want] of [
      [403, 'AccessDenied', 'S3 access denied (AccessDenied)'],
      [403, 'SignatureDoesNotMatch', 'S3 access denied (SignatureDoesNotMatch)'],
      [500, 'InternalError', 'S3 service error (InternalError)'],
    ] as const) {
      const fake = await fakeServer({ status, xml: echo(code) });
      try {
        const b = await openAt(newPrefix(), { endpoint: fake.endpoint });
        for (const call of [() => b.read('k', signal()), () => b.write('k', body('1'), null, signal()), () => listAll(b)]) {
          const err = await storeErrorOf(call());
          expect(err.message).toBe(want);
          expect(err.message).not.toContain(secret);
          expect(String(err.cause)).toContain(code); // the SDK's error stays the cause, for the log
        }
      } finally {
        await closeServer(fake.server);
      }
    }
    // Against LocalStack too: a missing bucket and a closed port.
    const missing = await open({ kind: 's3', bucket: `kmsgw-missing-${randomUUID().slice(0, 8)}`, prefix: '' }, settings);
    const closed = await open({ kind: 's3', bucket, prefix: '' }, { ...settings, endpoint: `http://127.0.0.1:${await freePort()}` });
    opened.push(missing, closed);
    for (const b of [missing, closed]) {
      const err = await storeErrorOf(b.write('k', body('1'), null, signal()));
      expect(err.message).not.toContain(secret);
    }
    expect((await storeErrorOf(closed.read('k', signal()))).message).toBe('S3 unreachable (ECONNREFUSED)');
  });

  it('gives up at its signal when S3 does not answer', async () => {
    const fake = await fakeServer();
    try {
      const b = await openAt(newPrefix(), { endpoint: fake.endpoint });
      const started = performance.now();
      expect((await storeErrorOf(b.read('k', AbortSignal.timeout(200)))).message).toBe('S3 request timed out');
      const controller = new AbortController();
      setTimeout(() => controller.abort(), 100);
      expect((await storeErrorOf(b.write('k', body('1'), null, controller.signal))).message).toBe('S3 request cancelled');
      expect(performance.now() - started).toBeLessThan(2_000);
    } finally {
      await closeServer(fake.server);
    }
  });
});
