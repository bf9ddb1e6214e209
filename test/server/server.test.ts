import { readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createClient } from '../../src/client/index.js';
import { ERROR_CODES } from '../../src/protocol/errors.js';
import { FAKE_FAILURES, fakeKms } from '../helpers/fake-adapter.js';
import { okPayload, b64, rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

async function gateway(...args: Parameters<typeof startTestGateway> extends [unknown, ...infer R] ? R : never) {
  const gw = await startTestGateway(await tmp(), ...args);
  running.push(gw);
  return gw;
}

describe('protocol v1 over a Unix socket', () => {
  it('answers every verb', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('PING')).toBe('OK PONG');
    expect(await c.ask('CREATE app/users')).toBe('OK 1');
    const dek = Buffer.from(okPayload(await c.ask('GET app/users')), 'base64');
    expect(dek).toHaveLength(32);
    expect(await c.ask('GET app/users@1')).toBe(`OK ${dek.toString('base64')}`);

    const env = okPayload(await c.ask(`ENC app/users ${b64('secret row')} ${b64('row:1')}`));
    expect(Buffer.from(env, 'base64')[0]).toBe(1);
    expect(await c.ask(`DEC app/users ${env} ${b64('row:1')}`)).toBe(`OK ${b64('secret row')}`);

    expect(await c.ask('ROTATE app/users')).toBe('OK 2');
    const env2 = okPayload(await c.ask(`ENC app/users ${b64('newer')}`));
    expect(Buffer.from(env2, 'base64').readUInt32BE(1)).toBe(2);
    // DEC uses the version in the envelope: the old one still opens.
    expect(await c.ask(`DEC app/users ${env} ${b64('row:1')}`)).toBe(`OK ${b64('secret row')}`);
    expect(await c.ask(`DEC app/users ${env2}`)).toBe(`OK ${b64('newer')}`);
    expect(okPayload(await c.ask('GET app/users'))).not.toBe(dek.toString('base64'));

    const info = JSON.parse(okPayload(await c.ask('INFO app/users')));
    expect(info).toMatchObject({ id: 'app/users', state: 'enabled', primary: 2 });
    const keks = (v: { keks: Array<{ kek: string }> }) => v.keks.map((k) => k.kek).join(',');
    expect(
      info.versions.map((v: { version: number; keks: Array<{ kek: string }>; state: string }) => [v.version, keks(v), v.state]),
    ).toEqual([
      [1, 'local://local-kek', 'enabled'],
      [2, 'local://local-kek', 'enabled'],
    ]);

    await c.ask('CREATE app/orders');
    await c.ask('CREATE pg/cluster-1');
    expect(JSON.parse(okPayload(await c.ask('LIST')))).toEqual(['app/orders', 'app/users', 'pg/cluster-1']);
    expect(JSON.parse(okPayload(await c.ask('LIST app/')))).toEqual(['app/orders', 'app/users']);
    expect(JSON.parse(okPayload(await c.ask('LIST zzz')))).toEqual([]);

    expect(await c.ask('DESTROY app/users@1')).toBe('OK 1');
    expect(await c.ask(`DEC app/users ${env} ${b64('row:1')}`)).toMatch(/^ERR DECRYPT_FAILED /);
    expect(await c.ask('GET app/users@1')).toMatch(/^ERR NOT_FOUND /);
    expect(await c.ask('DESTROY app/users@2')).toMatch(/^ERR BAD_REQUEST .*ROTATE first/);
    c.close();
  });

  it('INFO, LIST and logs never carry key material', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    const dek = okPayload(await c.ask('GET k'));
    const info = await c.ask('INFO k');
    const stored = JSON.parse(await readFile(join(gw.dir, 'data', 'keys', 'k.json'), 'utf8'));
    expect(info).not.toContain(dek);
    expect(info).not.toContain(stored.versions[0].wrapped);
    expect(info).not.toContain(stored.versions[0].commit);
    const hex = Buffer.from(dek, 'base64').toString('hex');
    const logs = gw.logLines.join('');
    for (const secret of [dek, hex, stored.versions[0].wrapped]) expect(logs).not.toContain(secret);
    // The store holds the wrapped DEK only, never the DEK.
    const onDisk = (await readdir(join(gw.dir, 'data', 'keys'))).map((f) => join(gw.dir, 'data', 'keys', f));
    for (const f of onDisk) {
      const text = await readFile(f, 'utf8');
      expect(text).not.toContain(dek);
      expect(text).not.toContain(hex);
    }
    c.close();
  });

  it('REWRAP moves versions to another KEK; the old KEK is then not needed', async () => {
    const gw = await gateway();
    const { ensureLocalKek } = await import('../../adapters/local/index.js');
    await ensureLocalKek(join(gw.dir, 'data', 'kek-b'));
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE moving');
    await c.ask('ROTATE moving');
    const v1 = okPayload(await c.ask('GET moving@1'));
    const v2 = okPayload(await c.ask('GET moving@2'));
    const env = okPayload(await c.ask(`ENC moving@1 ${b64('old data')}`));
    expect(await c.ask('REWRAP moving local://kek-b')).toBe('OK 2');
    expect(await c.ask('REWRAP moving local://kek-b')).toBe('OK 0');
    const info = JSON.parse(okPayload(await c.ask('INFO moving')));
    expect(info.versions.map((v: { keks: Array<{ kek: string }> }) => v.keks.map((k) => k.kek))).toEqual([
      ['local://kek-b'],
      ['local://kek-b'],
    ]);
    expect(await c.ask('REWRAP moving local://missing-kek')).toMatch(/^ERR KMS_DENIED /);
    expect(await c.ask('REWRAP nope local://kek-b')).toMatch(/^ERR NOT_FOUND /);
    c.close();
    await gw.close();
    running.pop();
    // Without the old KEK, a fresh gateway still opens everything.
    await rm(join(gw.dir, 'data', 'local-kek'));
    const gw2 = await startTestGateway(gw.dir, { keys: { autoCreate: false, defaultKek: 'local://kek-b' } });
    running.push(gw2);
    const c2 = await rawConnect(gw2.socketPath as string);
    expect(okPayload(await c2.ask('GET moving@1'))).toBe(v1);
    expect(okPayload(await c2.ask('GET moving@2'))).toBe(v2);
    expect(await c2.ask(`DEC moving ${env}`)).toBe(`OK ${b64('old data')}`);
    c2.close();
  });

  it('gives each error code its documented meaning', async () => {
    const gw = await gateway({ keys: { autoCreate: false } });
    const c = await rawConnect(gw.socketPath as string);
    const seen = new Set<string>();
    const expectErr = async (line: string, code: string) => {
      const reply = await c.ask(line);
      expect(reply, line).toMatch(new RegExp(`^ERR ${code} \\S`));
      seen.add(code);
    };
    await expectErr('GET', 'BAD_REQUEST');
    await expectErr('FROB x', 'UNKNOWN_VERB');
    await expectErr('GET nope', 'NOT_FOUND');
    await c.ask('CREATE k');
    await expectErr('CREATE k', 'EXISTS');
    await expectErr('ENC k not*base64', 'BAD_REQUEST');
    await expectErr('ENC k Zh==', 'BAD_REQUEST');
    const env = Buffer.from(okPayload(await c.ask(`ENC k ${b64('x')}`)), 'base64');
    env[env.length - 1] = (env[env.length - 1] as number) ^ 1;
    await expectErr(`DEC k ${env.toString('base64')}`, 'DECRYPT_FAILED');
    await expectErr('GET k@9', 'NOT_FOUND');
    await expectErr('CREATE other nope://x', 'BAD_REQUEST');

    await c.ask('CREATE f fake://kek');
    gw.cache.clear();
    for (const [mode, code] of FAKE_FAILURES) {
      fakeKms.mode = mode;
      await expectErr('GET f', code);
    }
    fakeKms.mode = 'ok';
    expect(await c.ask('GET f')).toMatch(/^OK /);

    const big = await rawConnect(gw.socketPath as string);
    big.write(`GET ${'a'.repeat(1024 * 1024 + 10)}\nPING\n`);
    expect((await big.lines(2))[0]).toMatch(/^ERR TOO_LARGE /);
    seen.add('TOO_LARGE');
    big.close();
    // FORBIDDEN is exercised in test/server/auth.test.ts, STORE_UNAVAILABLE in test/keystore/full-disk.test.ts.
    expect([...ERROR_CODES].filter((code) => !seen.has(code))).toEqual(['FORBIDDEN', 'STORE_UNAVAILABLE']);
    // No raw SDK text reaches the client, and the connection still works.
    expect(await c.ask('PING')).toBe('OK PONG');
    c.close();
  });

  it('times out a hanging KMS within kms.timeoutMs and keeps serving cached keys', async () => {
    const gw = await gateway({ kms: { timeoutMs: 100 } });
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE warm fake://kek');
    await c.ask('CREATE cold fake://kek');
    gw.cache.evict('cold', 1);
    fakeKms.mode = 'hang';
    const started = performance.now();
    expect(await c.ask('GET cold')).toBe('ERR KMS_UNAVAILABLE KMS did not answer within 100 ms');
    expect(performance.now() - started).toBeLessThan(2000);
    expect(await c.ask('GET warm')).toMatch(/^OK /);
    c.close();
  });

  it('refuses a stored blob swapped between ids (key commitment), whatever the adapter', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE a fake://kek');
    await c.ask('CREATE b fake://kek');
    await gw.close();
    running.pop();
    // The fake adapter ignores the context, so only the commitment tag can catch this.
    const dir = join(gw.dir, 'data', 'keys');
    const a = JSON.parse(await readFile(join(dir, 'a.json'), 'utf8'));
    const b = JSON.parse(await readFile(join(dir, 'b.json'), 'utf8'));
    a.versions[0].wraps = b.versions[0].wraps;
    await writeFile(join(dir, 'a.json'), JSON.stringify(a));
    const gw2 = await startTestGateway(gw.dir);
    running.push(gw2);
    const c2 = await rawConnect(gw2.socketPath as string);
    expect(await c2.ask('GET a')).toBe('ERR DECRYPT_FAILED stored key failed its commitment check');
    expect(await c2.ask('GET b')).toMatch(/^OK /);
    c2.close();
  });

  it('pipelines 10,000 requests sent in one write and answers in order', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE p');
    const envs: string[] = [];
    const lines: string[] = [];
    for (let i = 0; i < 10_000; i++) {
      if (i % 3 === 0) lines.push(`ENC p ${b64(`n${i}`)}`);
      else if (i % 3 === 1) lines.push(i % 2 ? 'PING' : 'GET nope@x');
      else lines.push(`GET p${i % 7}`); // cold keys created on first use: async replies among sync ones
    }
    c.write(`${lines.join('\n')}\n`);
    const replies = await c.lines(10_000, 30_000);
    replies.forEach((reply, i) => {
      if (i % 3 === 0) envs.push(okPayload(reply));
      else if (i % 3 === 1)
        expect(reply).toBe(i % 2 ? 'OK PONG' : 'ERR BAD_REQUEST key version must be a decimal number from 1 to 4294967295');
      else expect(reply).toMatch(/^OK [A-Za-z0-9+/]{43}=$/);
    });
    // Every ENC reply belongs to its own request.
    c.write(`${envs.map((e) => `DEC p ${e}`).join('\n')}\n`);
    const plain = await c.lines(envs.length, 30_000);
    plain.forEach((reply, j) => expect(reply).toBe(`OK ${b64(`n${j * 3}`)}`));
    c.close();
  });

  it('serves 50 concurrent clients', async () => {
    const gw = await gateway();
    const clients = await Promise.all(Array.from({ length: 50 }, () => createClient({ socketPath: gw.socketPath as string })));
    const keys = await Promise.all(clients.map((cl, i) => cl.get(`shared/${i % 5}`)));
    const again = await Promise.all(clients.map((cl, i) => cl.get(`shared/${i % 5}`)));
    keys.forEach((k, i) => expect(k.equals(again[i] as Buffer)).toBe(true));
    for (let i = 5; i < 50; i++) expect(keys[i]?.equals(keys[i % 5] as Buffer)).toBe(true);
    const roundTrips = await Promise.all(
      clients.map(async (cl, i) => (await cl.dec('shared/0', await cl.enc('shared/0', Buffer.from(`c${i}`)))).toString()),
    );
    expect(roundTrips).toEqual(clients.map((_, i) => `c${i}`));
    await Promise.all(clients.map((cl) => cl.close()));
  });

  it('100 concurrent cold GETs of a new key create it once and agree', async () => {
    const gw = await gateway();
    const cl = await createClient({ socketPath: gw.socketPath as string });
    const deks = await Promise.all(Array.from({ length: 100 }, () => cl.get('race/key')));
    expect(new Set(deks.map((d) => d.toString('hex'))).size).toBe(1);
    expect(gw.adapterCalls.filter((c) => c.op === 'wrap')).toHaveLength(1);
    const stored = JSON.parse(await readFile(join(gw.dir, 'data', 'keys', 'race%2Fkey.json'), 'utf8'));
    expect(stored.versions).toHaveLength(1);
    await cl.close();
  });

  it('unwraps a cold key once however many requests wait for it', async () => {
    const gw = await gateway();
    const cl = await createClient({ socketPath: gw.socketPath as string });
    await cl.create('cold/key');
    gw.cache.clear();
    const before = gw.adapterCalls.length;
    await Promise.all(Array.from({ length: 100 }, () => cl.get('cold/key')));
    expect(gw.adapterCalls.slice(before)).toEqual([{ op: 'unwrap', kek: 'local://local-kek' }]);
    await cl.close();
  });

  it('survives oversize lines and binary garbage, and the connection goes on', async () => {
    const gw = await gateway({ limits: { maxLineBytes: 4096 } });
    const c = await rawConnect(gw.socketPath as string);
    // Oversize line split across writes, then a normal request.
    c.write(`ENC k ${'A'.repeat(3000)}`);
    c.write('A'.repeat(3000));
    c.write(`${'A'.repeat(3000)}\nPING\n`);
    expect(await c.lines(2)).toEqual(['ERR TOO_LARGE request line exceeds 4096 bytes', 'OK PONG']);
    const garbage = Buffer.alloc(20_000);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 7919 + 13) & 0xff;
    const lfCount = garbage.filter((b) => b === 0x0a).length;
    c.write(garbage);
    c.write('\nPING\n');
    const replies = await c.lines(lfCount + 2);
    for (const r of replies.slice(0, -1)) expect(r).toMatch(/^ERR (BAD_REQUEST|UNKNOWN_VERB|TOO_LARGE) [\x20-\x7e]+$/);
    expect(replies.at(-1)).toBe('OK PONG');
    // CRLF is accepted.
    c.write('PING\r\n');
    expect(await c.lines(1)).toEqual(['OK PONG']);
    c.close();
  });

  it('a client that never reads does not make the server buffer without bound', async () => {
    const gw = await gateway();
    const warm = await rawConnect(gw.socketPath as string);
    await warm.ask('GET hog/key');
    const hog = connect(gw.socketPath as string);
    await new Promise<void>((r) => hog.once('connect', () => r()));
    hog.on('error', () => undefined);
    hog.pause(); // never reads a reply
    const burst = Buffer.from('GET hog/key\n'.repeat(10_000)); // 120 kB of requests, ~490 kB of replies
    for (let i = 0; i < 400; i++) hog.write(burst); // 48 MB offered in all
    // Give the server time to take all of it if it would (it reads ~100 MB/s here).
    let stats = gw.listener.stats();
    for (let tick = 0; tick < 10; tick++) {
      await new Promise((r) => setTimeout(r, 100));
      stats = gw.listener.stats();
    }
    // Without backpressure the server would read all 48 MB and queue ~200 MB of replies.
    expect(stats.bytesRead).toBeGreaterThan(0);
    expect(stats.bytesRead).toBeLessThan(4 * 1024 * 1024);
    expect(stats.bytesQueued).toBeLessThan(4 * 1024 * 1024);
    // Other clients are still served promptly.
    expect(await warm.ask('PING')).toBe('OK PONG');
    hog.destroy();
    warm.close();
  });

  it('closes idle connections and caps the number of connections', async () => {
    const gw = await gateway({ limits: { idleTimeoutMs: 200, maxConnections: 2 } });
    const a = await rawConnect(gw.socketPath as string);
    const b = await rawConnect(gw.socketPath as string);
    expect(await a.ask('PING')).toBe('OK PONG');
    const third = await rawConnect(gw.socketPath as string);
    expect(await third.lines(1)).toEqual(['ERR THROTTLED too many connections; try again later']);
    await third.closed();
    await Promise.all([a.closed(), b.closed()]); // idle timeout
    const d = await rawConnect(gw.socketPath as string);
    expect(await d.ask('PING')).toBe('OK PONG');
    d.close();
  });

  it('creates the socket with mode 0600 and the data folder 0700', async () => {
    const gw = await gateway();
    expect((await stat(gw.socketPath as string)).mode & 0o777).toBe(0o600);
    expect((await stat(join(gw.dir, 'data'))).mode & 0o777).toBe(0o700);
    expect((await stat(join(gw.dir, 'data', 'local-kek'))).mode & 0o777).toBe(0o600);
  });

  it('keeps every key across a restart, and refuses a second gateway on the same store', async () => {
    const gw = await gateway();
    const cl = await createClient({ socketPath: gw.socketPath as string });
    const ids = Array.from({ length: 20 }, (_, i) => `restart/${i}`);
    const before = await Promise.all(ids.map((id) => cl.get(id)));
    await cl.rotate('restart/0');
    const v2 = await cl.get('restart/0');
    const env = await cl.enc('restart/1', Buffer.from('kept'));
    await expect(startTestGateway(gw.dir, { listen: { socket: { path: join(gw.dir, 'other.sock') } } })).rejects.toThrow(
      /is in use by another running gateway/,
    );
    await cl.close();
    await gw.close();
    running.pop();

    const gw2 = await startTestGateway(gw.dir);
    running.push(gw2);
    const cl2 = await createClient({ socketPath: gw2.socketPath as string });
    const after = await Promise.all(ids.map((id, i) => cl2.get(i === 0 ? `${id}@1` : id)));
    after.forEach((dek, i) => expect(dek.equals(before[i] as Buffer)).toBe(true));
    expect((await cl2.get('restart/0')).equals(v2)).toBe(true);
    expect((await cl2.dec('restart/1', env)).toString()).toBe('kept');
    // Cold after restart: one unwrap per key version used.
    expect(gw2.adapterCalls.filter((c) => c.op === 'unwrap')).toHaveLength(21);
    await cl2.close();
  });

  it('serves plain TCP only when marked insecure and on loopback, with a warning', async () => {
    await expect(gateway({ listen: { socket: null, tcp: { host: '127.0.0.1', port: 0 } } })).rejects.toThrow(/listen\.tcp\.insecure: true/);
    const gw = await gateway({ listen: { socket: null, tcp: { host: '127.0.0.1', port: 0, insecure: true } } });
    expect(gw.logLines.join('')).toContain('listening on plain TCP without TLS');
    const cl = await createClient({ tcp: { host: '127.0.0.1', port: gw.listener.tcpPort as number } });
    await cl.ping();
    expect(await cl.get('tcp/key')).toHaveLength(32);
    await cl.close();
    await expect(gateway({ listen: { socket: null, tcp: { host: '0.0.0.0', port: 0, insecure: true } } })).rejects.toThrow(
      /not a loopback/,
    );
  });
});
