// Over 300 lines because it holds the conformance harness, the emulator checks that harness relies on, and the
// GCS-only tests with their stub server, which share its helpers.
// The Cloud Storage key-store backend against fake-gcs-server (test/setup/fake-gcs.ts starts it; see
// test/emulators/fake-gcs/README.md): the shared conformance suite, then what only this store has.
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { StoreError, type StoreBackend } from '../../src/keystore/backend.js';
import { classify, GcsBackend, open } from '../../src/keystore/gcs/index.js';
import { openBackend } from '../../src/keystore/open.js';
import { parseStoreUrl } from '../../src/keystore/url.js';
import { fakeGcsClient, startFakeGcs, type FakeGcs } from '../helpers/fake-gcs.js';
import { freePort } from '../helpers/net.js';
import { describeBackendConformance } from './conformance.js';

const { endpoint } = inject('fakeGcs');
const admin = fakeGcsClient(endpoint);
const BUCKET = `kmsgw-gcs-${process.pid}-${Date.now().toString(36)}`;
const settings = (ep: string) => ({ endpoint: ep, forcePathStyle: false });
const signal = (ms = 10_000): AbortSignal => AbortSignal.timeout(ms);
const body = (text: string): Buffer => Buffer.from(text, 'utf8');

beforeAll(async () => {
  await admin.bucket(BUCKET).create();
});

let prefixes = 0;
const locations = new Map<StoreBackend, { kind: 'gs'; bucket: string; prefix: string }>();

async function openAt(location: { kind: 'gs'; bucket: string; prefix: string }, ep = endpoint): Promise<GcsBackend> {
  const backend = await open(location, settings(ep));
  locations.set(backend, location);
  return backend;
}

describeBackendConformance({
  name: 'gcs (fake-gcs-server)',
  // Each backend its own prefix in the one bucket; `same` opens a second client (its own Storage objects).
  open: (same) => openAt(same ? locations.get(same)! : { kind: 'gs', bucket: BUCKET, prefix: `conf-${++prefixes}/` }),
  // A port nothing listens on: connections are refused at once.
  unreachable: async () => openAt({ kind: 'gs', bucket: BUCKET, prefix: 'x/' }, `http://127.0.0.1:${await freePort()}`),
  putForeign: async (backend, name, data) => {
    const { prefix } = locations.get(backend)!;
    await admin
      .bucket(BUCKET)
      .file(prefix + name)
      .save(data, { resumable: false });
  },
});

describe('gcs backend', () => {
  const opened: StoreBackend[] = [];
  const fresh = async (name: string): Promise<GcsBackend> => {
    const b = await openAt({ kind: 'gs', bucket: BUCKET, prefix: `${name}-${++prefixes}/` });
    opened.push(b);
    return b;
  };
  afterAll(async () => {
    await Promise.allSettled(opened.map((b) => b.close()));
  });

  it('harness: fake-gcs-server decides ifGenerationMatch itself (=0 create-only, =<generation> swap)', async () => {
    // The conformance races mean something only if the emulator enforces preconditions; check it directly.
    const file = admin.bucket(BUCKET).file('harness/precondition.json');
    const save = (text: string, ifGenerationMatch: string) =>
      file.save(text, { resumable: false, preconditionOpts: { ifGenerationMatch } }).then(
        () => 200,
        (err: { code?: number }) => err.code,
      );
    expect(await save('one', '0')).toBe(200);
    const [{ generation: g1 }] = await file.getMetadata();
    expect(await save('two', '0')).toBe(412);
    expect(await save('two', '1')).toBe(412);
    expect(await save('two', String(g1))).toBe(200);
    expect(await save('three', String(g1))).toBe(412);
    expect((await file.download())[0].toString()).toBe('two');
  });

  it('harness: fake-gcs-server checks a declared MD5 and pages listings when asked', async () => {
    const bucket = admin.bucket(BUCKET);
    const wrongMd5 = await bucket
      .file('harness/md5.json')
      .save('{}', { resumable: false, validation: false, metadata: { md5Hash: 'AAAAAAAAAAAAAAAAAAAAAA==' } })
      .then(
        () => 200,
        (err: { code?: number }) => err.code,
      );
    expect(wrongMd5).toBe(400);
    await Promise.all(['a', 'b', 'c'].map((n) => bucket.file(`harness/page/${n}`).save(n, { resumable: false })));
    const [first, next] = await bucket.getFiles({ prefix: 'harness/page/', maxResults: 2, autoPaginate: false });
    expect(first.map((f) => f.name)).toEqual(['harness/page/a', 'harness/page/b']);
    const [rest] = await bucket.getFiles({ ...next, autoPaginate: false });
    expect(rest.map((f) => f.name)).toEqual(['harness/page/c']);
  });

  it('uses the generation as the revision, so a write by any other tool makes an older revision lose', async () => {
    const b = await fresh('generation');
    const made = await b.write('k', body('{"v":1}'), null, signal());
    if (!made.ok) throw new Error('create failed');
    const file = admin.bucket(BUCKET).file(`${b.prefix}k.json`);
    const [meta] = await file.getMetadata();
    expect(made.revision).toBe(String(meta.generation));
    expect(meta.contentType).toBe('application/json');
    // Someone else replaces the object (no precondition): the revision this host holds is stale now.
    await file.save('{"v":"other"}', { resumable: false });
    expect(await b.write('k', body('{"v":2}'), made.revision, signal())).toEqual({ ok: false, conflict: true });
    const seen = await b.read('k', signal());
    expect(seen?.body.toString('utf8')).toBe('{"v":"other"}');
    expect(seen?.revision).not.toBe(made.revision);
    expect((await b.write('k', body('{"v":2}'), seen!.revision, signal())).ok).toBe(true);
    // An expectation that is no generation at all can never match.
    expect(await b.write('k', body('x'), 'W/"etag"', signal())).toEqual({ ok: false, conflict: true });
    expect(await b.write('k', body('x'), '0', signal())).toEqual({ ok: false, conflict: true });
  });

  it('names a missing bucket on list and write; a read finds nothing there', async () => {
    const missing = `kmsgw-missing-${process.pid}`;
    const b = await openAt({ kind: 'gs', bucket: missing, prefix: '' });
    opened.push(b);
    const message = `Cloud Storage bucket ${missing} does not exist`;
    await expect(b.write('k', body('x'), null, signal())).rejects.toThrow(new StoreError(message));
    await expect(async () => {
      for await (const _ of b.list('', signal())) void _;
    }).rejects.toThrow(new StoreError(message));
    // fake-gcs-server answers a download from a missing bucket with a bare 404, like an absent object; Cloud
    // Storage says "The specified bucket does not exist." (classify's test below covers that answer).
    expect(await b.read('k', signal())).toBeUndefined();
  });

  it('refuses writes when opened read-only, and every call once closed', async () => {
    const writer = await fresh('ro');
    await writer.write('k', body('x'), null, signal());
    const location = locations.get(writer)!;
    const reader = await open(location, settings(endpoint), { readOnly: true });
    expect((await reader.read('k', signal()))?.body.toString('utf8')).toBe('x');
    await expect(reader.write('k2', body('y'), null, signal())).rejects.toThrow('key store was opened read-only');
    await reader.close();
    await reader.close();
    await expect(reader.read('k', signal())).rejects.toThrow('key store is closed');
  });

  it('opens through keystore.url and openBackend, loading the SDK only then', async () => {
    const b = await openBackend(parseStoreUrl(`gs://${BUCKET}/via-url/a/`), settings(endpoint));
    opened.push(b);
    expect(b).toBeInstanceOf(GcsBackend);
    expect(b.location).toBe(`gs://${BUCKET}/via-url/a/`);
    expect((await b.write('id', body('{}'), null, signal())).ok).toBe(true);
    const [files] = await admin.bucket(BUCKET).getFiles({ prefix: 'via-url/' });
    expect(files.map((f) => f.name)).toEqual(['via-url/a/id.json']);
  });

  it('fails over an outage with StoreErrors and works again when the store is back (same client)', async () => {
    let emu: FakeGcs | undefined;
    try {
      emu = await startFakeGcs();
      const client = fakeGcsClient(emu.endpoint);
      await client.bucket('outage').create();
      const b = await openAt({ kind: 'gs', bucket: 'outage', prefix: '' }, emu.endpoint);
      const made = await b.write('k', body('1'), null, signal());
      expect(made.ok).toBe(true);
      await emu.stop();
      const quick = () => signal(3_000);
      await expect(b.read('k', quick())).rejects.toThrow(new StoreError('Cloud Storage unreachable (ECONNREFUSED)'));
      await expect(b.write('k', body('2'), null, quick())).rejects.toThrow(new StoreError('Cloud Storage unreachable (ECONNREFUSED)'));
      await emu.start(); // same port, empty (memory backend)
      await client.bucket('outage').create();
      expect(await b.read('k', quick())).toBeUndefined();
      expect((await b.write('k', body('3'), null, quick())).ok).toBe(true);
      expect((await b.read('k', quick()))?.body.toString('utf8')).toBe('3');
    } finally {
      await emu?.stop();
    }
  });

  describe('against a stub server', () => {
    let server: Server | undefined;
    let requests: { method: string; url: string; headers: IncomingHttpHeaders }[] = [];
    const sockets = new Set<Socket>();
    const startStub = async (handle: (res: ServerResponse, n: number) => void): Promise<string> => {
      requests = [];
      server = createServer((req, res) => {
        requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
        req.resume();
        req.on('end', () => handle(res, requests.length));
      });
      server.on('connection', (s: Socket) => (sockets.add(s), s.on('close', () => sockets.delete(s))));
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    };
    afterAll(async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => (server ? server.close(r) : r(undefined)));
    });
    const stop = async (): Promise<void> => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server?.close(r));
      server = undefined;
    };
    const unavailable = new StoreError('Cloud Storage unavailable (backendError, 503)');
    const answer503 = (res: ServerResponse): void => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 503, message: 'backend error', errors: [{ reason: 'backendError', message: 'x' }] } }));
    };

    it('retries a read and a listing once, never a write, and sends no credentials to an endpoint', async () => {
      const ep = await startStub(answer503);
      const b = await openAt({ kind: 'gs', bucket: 'stub', prefix: 'p/' }, ep);
      await expect(b.read('k', signal(5_000))).rejects.toThrow(unavailable);
      expect(requests.map((r) => r.method)).toEqual(['GET', 'GET']);
      requests = [];
      await expect(b.write('k', body('x'), null, signal(5_000))).rejects.toThrow(unavailable);
      expect(requests.map((r) => r.method)).toEqual(['POST']);
      expect(requests[0]?.url).toMatch(/^\/upload\/storage\/v1\/b\/stub\/o\?.*uploadType=multipart/);
      expect(requests[0]?.url).toMatch(/[?&]ifGenerationMatch=0(&|$)/);
      requests = [];
      await expect(b.write('k', body('x'), '123', signal(5_000))).rejects.toThrow(unavailable);
      expect(requests.map((r) => r.method)).toEqual(['POST']);
      expect(requests[0]?.url).toMatch(/[?&]ifGenerationMatch=123(&|$)/);
      requests = [];
      await expect(async () => {
        for await (const _ of b.list('', signal(5_000))) void _;
      }).rejects.toThrow(unavailable);
      expect(requests.map((r) => r.method)).toEqual(['GET', 'GET']);
      expect(requests[0]?.url).toMatch(/[?&]maxResults=1000(&|$)/);
      expect(requests.every((r) => r.headers.authorization === undefined)).toBe(true);
      await stop();
    });

    it('reads the object and its generation from one answer, after one retry', async () => {
      const ep = await startStub((res, n) => {
        if (n === 1) return answer503(res);
        res.writeHead(200, { 'content-type': 'application/json', 'x-goog-generation': '1700000000000001' });
        res.end('{"a":1}');
      });
      const b = await openAt({ kind: 'gs', bucket: 'stub', prefix: 'p/' }, ep);
      const got = await b.read('id/1', signal(5_000));
      expect(got?.body.toString('utf8')).toBe('{"a":1}');
      expect(got?.revision).toBe('1700000000000001');
      expect(requests.map((r) => r.url)).toEqual(Array(2).fill('/storage/v1/b/stub/o/p%2Fid%252F1.json?alt=media'));
      await stop();
    });

    it('gives up at the caller signal when the store accepts but never answers', async () => {
      const ep = await startStub(() => undefined); // holds every request open
      const b = await openAt({ kind: 'gs', bucket: 'stub', prefix: '' }, ep);
      const timedOut = new StoreError('Cloud Storage request timed out');
      const started = performance.now();
      await expect(b.read('k', signal(300))).rejects.toThrow(timedOut);
      await expect(b.write('k', body('x'), null, signal(300))).rejects.toThrow(timedOut);
      await expect(async () => {
        for await (const _ of b.list('', signal(300))) void _;
      }).rejects.toThrow(timedOut);
      const aborted = new AbortController();
      aborted.abort();
      await expect(b.read('k', aborted.signal)).rejects.toThrow(new StoreError('Cloud Storage request was cancelled'));
      expect(performance.now() - started).toBeLessThan(3_000);
      await stop();
    });
  });
});

describe('gcs error classification', () => {
  const apiError = (code: number, message: string, reason?: string) =>
    Object.assign(new Error(message), { code, errors: reason ? [{ reason, message }] : [] });
  const cases: [string, unknown, 'read' | 'write' | 'list', string][] = [
    [
      '403 with a reason',
      apiError(403, 'x@y.iam lacks storage.objects.get', 'forbidden'),
      'read',
      'Cloud Storage access denied (forbidden, 403)',
    ],
    ['401', apiError(401, 'Invalid Credentials', 'authError'), 'list', 'Cloud Storage refused the credentials (authError, 401)'],
    ['429', apiError(429, 'slow down', 'rateLimitExceeded'), 'write', 'Cloud Storage rate limit exceeded (rateLimitExceeded, 429)'],
    [
      'a 404 naming the bucket on a read',
      apiError(404, 'The specified bucket does not exist.', 'notFound'),
      'read',
      'Cloud Storage bucket b does not exist',
    ],
    ['400', apiError(400, 'Invalid argument', 'invalid'), 'write', 'Cloud Storage write refused (invalid, 400)'],
    [
      'a refused connection',
      Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }),
      'read',
      'Cloud Storage unreachable (ECONNREFUSED)',
    ],
    [
      'no credentials',
      new Error('Could not load the default credentials. Browse to https://...'),
      'read',
      'Cloud Storage credentials not found (Application Default Credentials)',
    ],
    [
      'a socket timeout',
      Object.assign(new Error('network timeout at: http://x'), { name: 'AbortError', code: 'ETIMEDOUT' }),
      'read',
      'Cloud Storage request timed out',
    ],
  ];
  it.each(cases)('%s', (_, err, op, message) => {
    const mapped = classify(err, op, 'b');
    expect(mapped).toBeInstanceOf(StoreError);
    expect(mapped.message).toBe(message);
    expect(mapped.cause).toBe(err);
  });
});
