import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import { listenProblem, parseListen } from '../../src/ops/listen.js';
import { fakeKms } from '../helpers/fake-adapter.js';
import { rawConnect, startTestGateway, testGatewayConfig, useRunningGateways, type TestGateway } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { METRIC } from '../../src/metrics/metrics.js';
import { opsGet, scrape } from './prometheus.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

async function gateway(overrides: ConfigInput = {}): Promise<TestGateway> {
  const gw = await startTestGateway(await tmp(), {
    ...overrides,
    kms: { retry: { attempts: 1 }, canaryIntervalMs: 0, ...overrides.kms },
    ops: { listen: '127.0.0.1:0', ...overrides.ops },
  });
  running.push(gw);
  return gw;
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((done) => probe.listen(0, '127.0.0.1', done));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((done) => probe.close(() => done()));
  return port;
}

/** A raw HTTP exchange (fetch cannot send a body with GET). */
function raw(
  port: number,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const headers = body === undefined ? {} : { 'Content-Length': Buffer.byteLength(body) };
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('ops listener', () => {
  it('/livez answers 200 ok (GET and HEAD) and touches neither the KMS nor the store', async () => {
    const gw = await gateway();
    const port = gw.ops?.port as number;
    const calls = gw.adapterCalls.length;
    const store = structuredClone(gw.store.stats);
    const res = await opsGet(port, '/livez');
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('ok\n');
    const head = await raw(port, 'HEAD', '/livez');
    expect(head).toMatchObject({ status: 200, body: '' });
    expect(head.headers['content-length']).toBe('3');
    expect(gw.adapterCalls.length).toBe(calls);
    expect(gw.store.stats).toEqual(store);
  });

  it('answers 404 for other paths, 405 for other methods, 400 for a request with a body', async () => {
    const gw = await gateway();
    const port = gw.ops?.port as number;
    expect((await opsGet(port, '/')).status).toBe(404);
    expect((await opsGet(port, '/metrics/x')).status).toBe(404);
    const post = await raw(port, 'POST', '/metrics');
    expect(post.status).toBe(405);
    expect(post.headers['allow']).toBe('GET, HEAD');
    expect((await raw(port, 'DELETE', '/readyz')).status).toBe(405);
    expect((await raw(port, 'GET', '/livez', 'x'.repeat(100))).status).toBe(400);
    // Still serving afterwards.
    expect((await opsGet(port, '/livez')).status).toBe(200);
  });

  it('/readyz is 503 with each KEK and its last error code while a KEK in use fails, and 200 once it works again', async () => {
    const gw = await gateway();
    const port = gw.ops?.port as number;
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('CREATE k fake://kek-1')).toMatch(/^OK /);
    let res = await opsGet(port, '/readyz');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(await res.json()).toMatchObject({ ready: true, store: true, listening: true });

    gw.cache.evict('k', 1);
    fakeKms.mode = 'down';
    expect(await c.ask('GET k')).toMatch(/^ERR KMS_UNAVAILABLE /);
    res = await opsGet(port, '/readyz');
    expect(res.status).toBe(503);
    const body = (await res.json()) as { ready: boolean; keks: Array<Record<string, unknown>> };
    expect(body.ready).toBe(false);
    expect(body.keks).toContainEqual({ kek: 'fake://kek-1', state: 'unavailable', code: 'KMS_UNAVAILABLE' });
    expect((await scrape(port)).value(METRIC.ready)).toBe(0);
    const verbose = (await (await opsGet(port, '/readyz?verbose')).json()) as typeof body;
    const kek = verbose.keks.find((k) => k.kek === 'fake://kek-1');
    expect(kek).toMatchObject({ state: 'unavailable', code: 'KMS_UNAVAILABLE', since: expect.any(Number), checkedAt: expect.any(Number) });
    expect((await raw(port, 'HEAD', '/readyz')).status).toBe(503);

    fakeKms.mode = 'ok';
    expect(await c.ask('GET k')).toMatch(/^OK /);
    res = await opsGet(port, '/readyz');
    expect(res.status).toBe(200);
    expect(((await res.json()) as typeof body).keks).toContainEqual({ kek: 'fake://kek-1', state: 'ok' });
    expect((await scrape(port)).value(METRIC.ready)).toBe(1);
    c.close();
  });

  it('is off unless ops.listen is set (KMSGW_OPS_LISTEN sets it), and the metrics registry is there anyway', async () => {
    const gw = await startTestGateway(await tmp());
    running.push(gw);
    expect(gw.ops).toBeUndefined();
    expect(await gw.metrics.text()).toContain('kmsgw_requests_total');
    const dev = { keys: { autoCreate: true }, kms: { adapters: { local: { enabled: true } } } };
    expect(validateConfig(dev, 'test').ops).toEqual({ allowRemote: false, metrics: true });
    expect(validateConfig(dev, 'test', { KMSGW_OPS_LISTEN: '127.0.0.1:9464' }).ops.listen).toBe('127.0.0.1:9464');
  });

  it('refuses a non-loopback ops.listen unless ops.allowRemote: true, naming the field', async () => {
    const dir = await tmp();
    await expect(startTestGateway(dir, { ops: { listen: '0.0.0.0:0' } })).rejects.toThrow(
      /ops\.listen: .*0\.0\.0\.0 is not a loopback address.*ops\.allowRemote/,
    );
    await expect(startTestGateway(dir, { ops: { listen: 'nonsense' } })).rejects.toThrow(/ops\.listen: .*must be host:port/);
    const gw = await gateway({ ops: { listen: '0.0.0.0:0', allowRemote: true } });
    expect((await opsGet(gw.ops?.port as number, '/livez')).status).toBe(200);

    expect(parseListen('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(listenProblem('[::1]:9464', false)).toBeUndefined();
    expect(listenProblem('localhost:9464', false)).toBeUndefined();
    expect(listenProblem('127.0.0.2:1', false)).toBeUndefined();
    expect(listenProblem('10.0.0.1:9464', false)).toMatch(/not a loopback address/);
    expect(listenProblem('10.0.0.1:9464', true)).toBeUndefined();
    expect(listenProblem('127.0.0.1:65536', false)).toMatch(/must be host:port/);
  });

  it('moves to a changed ops.listen on reload, and keeps the old one when the new one cannot start', async () => {
    const gw = await gateway();
    const old = gw.ops?.port as number;
    const port = await freePort();
    const next = (listen: string) => ({
      config: testGatewayConfig(gw.dir, { kms: { retry: { attempts: 1 } }, ops: { listen } }),
      file: undefined,
      baseDir: gw.dir,
    });
    const moved = await gw.reload(next(`127.0.0.1:${port}`));
    expect(moved).toMatchObject({ ok: true, applied: expect.arrayContaining(['ops.listen']) });
    expect((await opsGet(port, '/livez')).status).toBe(200);
    await expect(opsGet(old, '/livez')).rejects.toThrow();

    // A port taken by someone else: the reload says so, and the listener stays where it was.
    const taken = createServer();
    await new Promise<void>((done) => taken.listen(0, '127.0.0.1', done));
    try {
      const refused = await gw.reload(next(`127.0.0.1:${(taken.address() as AddressInfo).port}`));
      expect(refused).toMatchObject({ ok: true, warnings: [expect.stringMatching(/^ops: .*EADDRINUSE/)] });
      // Started again where it was (a new connection: the old ones were closed with it).
      expect((await raw(port, 'GET', '/livez')).status).toBe(200);
    } finally {
      taken.close();
    }
  });

  it('stops with the gateway', async () => {
    const gw = await gateway();
    const port = gw.ops?.port as number;
    await gw.close();
    await expect(opsGet(port, '/livez')).rejects.toThrow();
  });
});
