import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { changedFields } from '../../src/config/reload.js';
import type { LoadedConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { rawConnect, startTestGateway, testGatewayConfig, useRunningGateways, type TestGateway } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();
const uid = process.getuid?.() ?? 0;

/** The config startTestGateway(dir, overrides) runs with, as a reload would read it. */
function loaded(dir: string, overrides: ConfigInput): LoadedConfig {
  return { config: testGatewayConfig(dir, overrides), file: undefined, baseDir: dir };
}

const policy = (keys: string[]): ConfigInput['policy'] => ({
  clients: [{ name: 'me', match: { uids: [uid] }, grants: [{ verbs: ['GET'], keys }] }],
});

async function start(overrides: ConfigInput, options: Parameters<typeof startTestGateway>[2] = {}): Promise<TestGateway> {
  const gw = await startTestGateway(await tmp(), overrides, options);
  running.push(gw);
  return gw;
}

describe('reload (RunningGateway.reload)', () => {
  it('a new policy applies from the next request, on connections already open too', async () => {
    const gw = await start({ policy: policy(['a/*']) });
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('GET b/1')).toMatch(/^ERR FORBIDDEN/);
    const result = await gw.reload(loaded(gw.dir, { policy: policy(['a/*', 'b/*']) }));
    expect(result).toEqual({ ok: true, applied: ['policy.clients'], reopened: [], restartRequired: [], warnings: [] });
    expect(await c.ask('GET b/1')).toMatch(/^OK /);
    const fresh = await rawConnect(gw.socketPath as string);
    expect(await fresh.ask('GET b/2')).toMatch(/^OK /);
    c.close();
    fresh.close();
  });

  it('turning the policy on or off, and other restart-only fields, are reported and not applied', async () => {
    const gw = await start({});
    const result = await gw.reload(loaded(gw.dir, { policy: policy(['a/*']), limits: { shutdownGraceMs: 1 }, cache: { warm: ['pg/*'] } }));
    expect(result).toMatchObject({ ok: true, applied: [], restartRequired: ['cache.warm', 'limits.shutdownGraceMs', 'policy'] });
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('GET b/1')).toMatch(/^OK /); // still no policy
    c.close();
    expect(gw.logLines.some((l) => l.includes('take effect only after a restart') && l.includes('"policy"'))).toBe(true);
  });

  it('cache.ttlMs applies to DEKs unwrapped after the reload', async () => {
    let now = 1_000_000;
    const gw = await start({ cache: { ttlMs: 60_000 } }, { clock: { now: () => now } });
    const result = await gw.reload(loaded(gw.dir, { cache: { ttlMs: 100 } }));
    expect(result).toMatchObject({ ok: true, applied: ['cache.ttlMs'] });
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('GET t/1')).toMatch(/^OK /);
    const unwraps = () => gw.adapterCalls.filter((a) => a.op === 'unwrap').length;
    const before = unwraps();
    expect(await c.ask('GET t/1')).toMatch(/^OK /);
    expect(unwraps()).toBe(before); // cached
    now += 200; // past the new TTL (the old one was a minute)
    expect(await c.ask('GET t/1')).toMatch(/^OK /);
    expect(unwraps()).toBe(before + 1);
    c.close();
  });

  it('limits: a lowered maxConnections refuses the next connection; log.level applies', async () => {
    const gw = await start({});
    const keep = await rawConnect(gw.socketPath as string);
    const result = await gw.reload(loaded(gw.dir, { limits: { maxConnections: 1 }, log: { level: 'warn' } }));
    expect(result).toMatchObject({ ok: true, applied: ['log.level', 'limits.maxConnections'] });
    expect(gw.log.level).toBe('warn');
    expect(await keep.ask('PING')).toBe('OK PONG'); // open connections are not cut
    const extra = await rawConnect(gw.socketPath as string);
    expect((await extra.lines(1))[0]).toMatch(/^ERR THROTTLED/);
    keep.close();
    extra.close();
  });

  it('changedFields names leaves; arrays are compared whole', () => {
    expect(changedFields({ a: { b: 1, c: [1] } }, { a: { b: 2, c: [1, 2] }, d: 1 })).toEqual(['a.b', 'a.c', 'd']);
    expect(changedFields({ a: 1 }, { a: 1 })).toEqual([]);
  });
});

describe('reload of TLS certificates', () => {
  let pki: TestPki;
  beforeAll(async () => {
    pki = await makeTestPki();
  });
  afterAll(async () => {
    await pki?.dispose();
  });

  const tlsConfig = (ca: string, key = pki.server.keyPath): ConfigInput => ({
    listen: { socket: null, tls: { host: '127.0.0.1', port: 0, cert: pki.server.certPath, key, ca } },
  });

  /** Whether a TLS client with `pair` gets an answer to PING (the gateway verifies its certificate against its CA). */
  async function pings(gw: TestGateway, pair: { cert: Buffer; key: Buffer }): Promise<boolean> {
    const options: ConnectionOptions = { host: '127.0.0.1', port: gw.listener.tlsPort, ca: pki.ca.cert, servername: 'localhost', ...pair };
    return new Promise((resolve) => {
      const socket = tlsConnect(options, () => socket.write('PING\n'));
      socket.setEncoding('utf8');
      socket.on('data', (d: string) => {
        resolve(d === 'OK PONG\n');
        socket.destroy();
      });
      socket.on('error', () => resolve(false));
      socket.on('close', () => resolve(false));
    });
  }

  it('a new CA applies to the next handshake; unusable files are refused and the old ones stay', async () => {
    const gw = await start(tlsConfig(pki.ca.certPath));
    expect(await pings(gw, pki.client)).toBe(true);
    expect(await pings(gw, pki.foreignClient)).toBe(false);

    const bad = await gw.reload(loaded(gw.dir, tlsConfig(pki.foreignCa.certPath, pki.client.keyPath)));
    expect(bad).toMatchObject({ ok: false, fields: ['listen.tls.cert', 'listen.tls.key', 'listen.tls.ca'] });
    expect(await pings(gw, pki.client)).toBe(true);
    const missing = await gw.reload(loaded(gw.dir, tlsConfig(join(gw.dir, 'nope.pem'))));
    expect(missing).toMatchObject({ ok: false, fields: ['listen.tls.ca'] });

    const good = await gw.reload(loaded(gw.dir, tlsConfig(pki.foreignCa.certPath)));
    expect(good).toMatchObject({ ok: true, applied: ['listen.tls.ca'], reopened: ['listen.tls'] });
    expect(await pings(gw, pki.foreignClient)).toBe(true);
    expect(await pings(gw, pki.client)).toBe(false);
  });
});
