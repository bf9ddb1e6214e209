import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.js';
import { hashToken } from '../../src/policy/policy.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { b64, rawConnect, startTestGateway, useRunningGateways, type RawConn, type TestGateway } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
// Registered before the hook below, so it runs after it (vitest runs after-hooks in reverse): connections close first.
const running = useRunningGateways();
const open: Array<{ close(): void }> = [];

async function gateway(overrides: ConfigInput = {}): Promise<TestGateway> {
  const gw = await startTestGateway(await tmp(), overrides);
  running.push(gw);
  return gw;
}

async function conn(gw: TestGateway): Promise<RawConn> {
  const c = await rawConnect(gw.socketPath as string);
  open.push(c);
  return c;
}

afterEach(() => {
  for (const c of open.splice(0)) c.close();
});

const payload = (reply: string) => {
  expect(reply).toMatch(/^OK /);
  return reply.slice(3);
};

/** Token-identified clients (the unix socket has no peer credentials yet). */
const POLICY = {
  clients: [
    { name: 'pg-app', match: { tokens: [hashToken('tok-pg-app')] }, grants: [{ verbs: ['GET', 'ENC', 'DEC'], keys: ['pg/*'] }] },
    { name: 'tenant-b', match: { tokens: [hashToken('tok-tenant-b')] }, grants: [{ verbs: ['GET', 'ENC', 'DEC'], keys: ['tenant-b/*'] }] },
    { name: 'sealer', match: { tokens: [hashToken('tok-sealer')] }, grants: [{ verbs: ['ENC', 'DEC'], keys: ['pg/*'] }] },
    { name: 'ops', match: { tokens: [hashToken('tok-ops')] }, grants: [{ verbs: ['admin'], keys: ['*'] }] },
    { name: 'pg-ops', match: { tokens: [hashToken('tok-pg-ops')] }, grants: [{ verbs: ['admin'], keys: ['pg/*'] }] },
    { name: 'lister', match: { tokens: [hashToken('tok-lister')] }, grants: [{ verbs: ['LIST'], keys: ['pg/*'] }] },
  ],
} satisfies ConfigInput['policy'];

async function authed(gw: TestGateway, token: string, name: string): Promise<RawConn> {
  const c = await conn(gw);
  expect(await c.ask(`AUTH ${token}`)).toBe(`OK ${name}`);
  return c;
}

describe('policy over the unix socket (AUTH tokens)', () => {
  it('before AUTH only PING is allowed; a wrong token fails; the right one names the client', async () => {
    const gw = await gateway({ policy: POLICY });
    const c = await conn(gw);
    expect(await c.ask('PING')).toBe('OK PONG');
    expect(await c.ask('GET pg/a')).toMatch(/^ERR FORBIDDEN /);
    expect(await c.ask(`ENC pg/a ${b64('x')}`)).toMatch(/^ERR FORBIDDEN /);
    expect(await c.ask('LIST')).toMatch(/^ERR FORBIDDEN /);
    expect(await c.ask('AUTH wrong')).toBe('ERR FORBIDDEN authentication failed');
    expect(await c.ask('GET pg/a')).toMatch(/^ERR FORBIDDEN /);
    expect(await c.ask(`AUTH ${hashToken('tok-pg-app')}`)).toBe('ERR FORBIDDEN authentication failed');
    expect(await c.ask('AUTH tok-pg-app')).toBe('OK pg-app');
    expect(payload(await c.ask('GET pg/a'))).toHaveLength(44);
    // Nothing was created by the refused requests before AUTH either way: pg/a exists once.
    const ops = await authed(gw, 'tok-ops', 'ops');
    expect(JSON.parse(payload(await ops.ask('LIST')))).toEqual(['pg/a']);
  });

  it("an authenticated client may GET, ENC and DEC its keys; another tenant's key is FORBIDDEN and its DEK never returned", async () => {
    const gw = await gateway({ policy: POLICY });
    const b = await authed(gw, 'tok-tenant-b', 'tenant-b');
    const theirDek = payload(await b.ask('GET tenant-b/secret'));

    const c = await authed(gw, 'tok-pg-app', 'pg-app');
    const dek = payload(await c.ask('GET pg/cluster-1/tde'));
    expect(Buffer.from(dek, 'base64')).toHaveLength(32);
    expect(await c.ask('GET pg/cluster-1/tde@1')).toBe(`OK ${dek}`);
    const env = payload(await c.ask(`ENC pg/cluster-1/tde ${b64('row')} ${b64('aad')}`));
    expect(await c.ask(`DEC pg/cluster-1/tde ${env} ${b64('aad')}`)).toBe(`OK ${b64('row')}`);

    for (const line of ['GET tenant-b/secret', 'GET tenant-b/secret@1', `ENC tenant-b/secret ${b64('x')}`, 'GET tenant-b/new']) {
      const reply = await c.ask(line);
      expect(reply).toMatch(/^ERR FORBIDDEN /);
      expect(reply).not.toContain(theirDek);
    }
    // The tenant's envelope cannot be opened by pg-app either.
    const theirEnv = payload(await b.ask(`ENC tenant-b/secret ${b64('theirs')}`));
    expect(await c.ask(`DEC tenant-b/secret ${theirEnv}`)).toMatch(/^ERR FORBIDDEN /);
    // A refused GET of an unknown id did not auto-create it.
    const ops = await authed(gw, 'tok-ops', 'ops');
    expect(JSON.parse(payload(await ops.ask('LIST tenant-b/')))).toEqual(['tenant-b/secret']);
  });

  it('an ENC/DEC-only client cannot GET, while its ENC and DEC work', async () => {
    const gw = await gateway({ policy: POLICY });
    const app = await authed(gw, 'tok-pg-app', 'pg-app');
    const dek = payload(await app.ask('GET pg/k'));
    const s = await authed(gw, 'tok-sealer', 'sealer');
    const env = payload(await s.ask(`ENC pg/k ${b64('hello')}`));
    expect(await s.ask(`DEC pg/k ${env}`)).toBe(`OK ${b64('hello')}`);
    for (const line of ['GET pg/k', 'GET pg/k@1', 'GET pg/other']) {
      const reply = await s.ask(line);
      expect(reply).toMatch(/^ERR FORBIDDEN /);
      expect(reply).not.toContain(dek);
    }
  });

  const ADMIN_LINES = (id: string) => [`CREATE ${id}`, `ROTATE ${id}`, `REWRAP ${id} local://local-kek`, `DESTROY ${id}@1`, `INFO ${id}`];

  it('admin verbs are refused without an admin grant and allowed with one', async () => {
    const gw = await gateway({ policy: POLICY });
    for (const [token, name] of [
      ['tok-pg-app', 'pg-app'],
      ['tok-sealer', 'sealer'],
      ['tok-lister', 'lister'],
    ] as const) {
      const c = await authed(gw, token, name);
      for (const line of ADMIN_LINES('pg/admin-test')) expect(await c.ask(line), `${name}: ${line}`).toMatch(/^ERR FORBIDDEN /);
      if (name !== 'lister') expect(await c.ask('LIST')).toMatch(/^ERR FORBIDDEN /);
    }
    const ops = await authed(gw, 'tok-ops', 'ops');
    expect(JSON.parse(payload(await ops.ask('LIST')))).toEqual([]); // nothing was created by the refused CREATEs
    expect(await ops.ask('CREATE pg/admin-test')).toBe('OK 1');
    expect(await ops.ask('ROTATE pg/admin-test')).toBe('OK 2');
    expect(await ops.ask('REWRAP pg/admin-test local://local-kek')).toBe('OK 0');
    expect(await ops.ask('DESTROY pg/admin-test@1')).toBe('OK 1');
    expect(JSON.parse(payload(await ops.ask('INFO pg/admin-test')))).toMatchObject({ id: 'pg/admin-test', primary: 2 });
    // `admin` is not GET: an admin grant never hands out a DEK.
    expect(await ops.ask('GET pg/admin-test')).toMatch(/^ERR FORBIDDEN /);

    // Admin on pg/* only.
    const pgOps = await authed(gw, 'tok-pg-ops', 'pg-ops');
    expect(await pgOps.ask('CREATE pg/second')).toBe('OK 1');
    for (const line of ADMIN_LINES('app/x')) expect(await pgOps.ask(line), line).toMatch(/^ERR FORBIDDEN /);
  });

  it('LIST returns only the ids the client may LIST', async () => {
    const gw = await gateway({ policy: POLICY });
    const ops = await authed(gw, 'tok-ops', 'ops');
    for (const id of ['pg/a', 'pg/b/c', 'pgx', 'app/x', 'tenant-b/y']) expect(await ops.ask(`CREATE ${id}`)).toBe('OK 1');
    expect(JSON.parse(payload(await ops.ask('LIST')))).toEqual(['app/x', 'pg/a', 'pg/b/c', 'pgx', 'tenant-b/y']);
    const l = await authed(gw, 'tok-lister', 'lister');
    expect(JSON.parse(payload(await l.ask('LIST')))).toEqual(['pg/a', 'pg/b/c']);
    expect(JSON.parse(payload(await l.ask('LIST pg/b')))).toEqual(['pg/b/c']);
    expect(JSON.parse(payload(await l.ask('LIST app/')))).toEqual([]);
    // LIST does not give INFO.
    expect(await l.ask('INFO pg/a')).toMatch(/^ERR FORBIDDEN /);
  });

  it('after 5 failed AUTHs on a connection even the right token is refused there, and from the same peer uid', async () => {
    const gw = await gateway({ policy: POLICY });
    const c = await conn(gw);
    for (let i = 0; i < 5; i++) expect(await c.ask(`AUTH wrong-${i}`)).toBe('ERR FORBIDDEN authentication failed');
    expect(await c.ask('AUTH tok-pg-app')).toBe('ERR FORBIDDEN too many failed attempts; try again later');
    expect(await c.ask('GET pg/a')).toMatch(/^ERR FORBIDDEN /);
    // A new connection from the same peer uid (SO_PEERCRED; test/server/peercred.test.ts requires the addon) is limited too.
    const again = await conn(gw);
    expect(await again.ask('AUTH tok-pg-app')).toBe('ERR FORBIDDEN too many failed attempts; try again later');
  });

  it('TCP has no peer identity: failures are limited per connection, never locking out another loopback client', async () => {
    const gw = await gateway({ policy: POLICY, listen: { socket: null, tcp: { host: '127.0.0.1', port: 0, insecure: true } } });
    const port = gw.listener.tcpPort as number;
    const tcp = (localAddress: string) => lineConn(netConnect({ host: '127.0.0.1', port, localAddress }), 'connect');
    const one = await tcp('127.0.0.1');
    for (let i = 0; i < 5; i++) expect(await one.ask('AUTH nope')).toBe('ERR FORBIDDEN authentication failed');
    expect(await one.ask('AUTH tok-pg-app')).toBe('ERR FORBIDDEN too many failed attempts; try again later');
    for (const address of ['127.0.0.1', '127.0.0.2']) {
      const other = await tcp(address);
      expect(await other.ask('AUTH tok-pg-app'), address).toBe('OK pg-app');
      expect(payload(await other.ask('GET pg/a'))).toHaveLength(44);
    }
  });

  it('a connection keeps the client of its last successful AUTH; a failed AUTH does not drop it', async () => {
    const gw = await gateway({ policy: POLICY });
    const c = await authed(gw, 'tok-pg-app', 'pg-app');
    expect(await c.ask('AUTH wrong')).toBe('ERR FORBIDDEN authentication failed');
    expect(payload(await c.ask('GET pg/a'))).toHaveLength(44);
    expect(await c.ask('AUTH tok-tenant-b')).toBe('OK tenant-b');
    expect(await c.ask('GET pg/a')).toMatch(/^ERR FORBIDDEN /);
  });

  it('without a policy (development default) everything is allowed, AUTH is not in use, and the start log warns', async () => {
    const gw = await gateway();
    expect(gw.logLines.some((l) => /"level":40/.test(l) && l.includes('no policy configured'))).toBe(true);
    const c = await conn(gw);
    expect(payload(await c.ask('GET pg/a'))).toHaveLength(44);
    expect(await c.ask('CREATE app/x')).toBe('OK 1');
    expect(await c.ask('ROTATE app/x')).toBe('OK 2');
    expect(JSON.parse(payload(await c.ask('LIST')))).toEqual(['app/x', 'pg/a']);
    expect(await c.ask('AUTH anything')).toMatch(/^ERR BAD_REQUEST AUTH is not in use/);
  });

  it('with a policy the start log says default deny and names the clients, without tokens or hashes', async () => {
    const gw = await gateway({ policy: POLICY });
    const line = gw.logLines.find((l) => l.includes('policy loaded'));
    expect(line).toBeDefined();
    expect(line).toContain('pg-app');
    const all = gw.logLines.join('\n');
    expect(all).not.toContain('tok-pg-app');
    expect(all).not.toContain(hashToken('tok-pg-app').slice(7));
    expect(all).not.toContain('no policy configured');
  });
});

// --- mTLS -----------------------------------------------------------------

interface LineConn {
  readonly socket: Socket;
  ask(line: string): Promise<string>;
  close(): void;
}

/** Line protocol over an already-connecting socket; resolves once `readyEvent` fires. */
async function lineConn(socket: Socket, readyEvent: 'connect' | 'secureConnect'): Promise<LineConn> {
  await new Promise<void>((resolve, reject) => {
    socket.once(readyEvent, () => resolve());
    socket.once('error', reject);
  });
  open.push({ close: () => socket.destroy() });
  socket.on('error', () => undefined);
  socket.setEncoding('latin1');
  let buffered = '';
  const waiting: Array<(line: string) => void> = [];
  const got: string[] = [];
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    let lf: number;
    while ((lf = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, lf);
      buffered = buffered.slice(lf + 1);
      const w = waiting.shift();
      if (w) w(line);
      else got.push(line);
    }
  });
  return {
    socket,
    ask(line) {
      socket.write(`${line}\n`);
      const ready = got.shift();
      if (ready !== undefined) return Promise.resolve(ready);
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no reply to ${line}`)), 10_000);
        socket.once('close', () => reject(new Error(`connection closed before a reply to ${line}`)));
        waiting.push((l) => {
          clearTimeout(timer);
          resolve(l);
        });
      });
    },
    close: () => socket.destroy(),
  };
}

/** Outcome of a TLS connection attempt that sends PING and GET once (if) the handshake completes. */
interface Attempt {
  readonly secure: boolean;
  readonly data: string;
  readonly error: string | undefined;
  /** True when the server neither answered nor closed within 5 s (the attempt gave up). */
  readonly timedOut: boolean;
}

function attempt(options: ConnectionOptions): Promise<Attempt> {
  return new Promise<Attempt>((resolve) => {
    let secure = false;
    let data = '';
    let error: string | undefined;
    let timedOut = false;
    const socket: TLSSocket = tlsConnect(options);
    open.push({ close: () => socket.destroy() });
    const timer = setTimeout(() => {
      timedOut = true;
      socket.destroy();
    }, 5000);
    socket.setEncoding('latin1');
    socket.on('secureConnect', () => {
      secure = true;
      socket.write('PING\nGET pg/cluster-1/tde\n');
    });
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ secure, data, error, timedOut });
    });
  });
}

describe('mTLS listener', () => {
  let pki: TestPki;
  beforeAll(async () => {
    pki = await makeTestPki();
  });
  afterAll(async () => {
    await pki?.dispose();
  });

  const tlsGateway = () =>
    gateway({
      listen: {
        socket: null,
        tls: { host: '127.0.0.1', port: 0, cert: pki.server.certPath, key: pki.server.keyPath, ca: pki.ca.certPath },
      },
      policy: {
        clients: [
          {
            name: 'pg-cluster-1',
            match: { certs: ['pg-cluster-1'] },
            grants: [{ verbs: ['GET', 'ENC', 'DEC'], keys: ['pg/cluster-1/*'] }],
          },
          { name: 'ops', match: { tokens: [hashToken('tok-ops')] }, grants: [{ verbs: ['admin'], keys: ['*'] }] },
        ],
      },
    });

  const base = (gw: TestGateway): ConnectionOptions => ({
    host: '127.0.0.1',
    port: gw.listener.tlsPort,
    ca: pki.ca.cert,
    servername: 'localhost',
  });

  it('a client with a certificate from the CA is identified by its CN, with no AUTH', async () => {
    const gw = await tlsGateway();
    expect(gw.socketPath).toBeUndefined();
    expect(gw.listener.tlsPort).toBeGreaterThan(0);
    const c = await lineConn(tlsConnect({ ...base(gw), cert: pki.client.cert, key: pki.client.key }), 'secureConnect');
    expect((c.socket as TLSSocket).getProtocol()).toBe('TLSv1.3');
    expect(await c.ask('PING')).toBe('OK PONG');
    const dek = payload(await c.ask('GET pg/cluster-1/tde'));
    expect(Buffer.from(dek, 'base64')).toHaveLength(32);
    const env = payload(await c.ask(`ENC pg/cluster-1/tde ${b64('x')}`));
    expect(await c.ask(`DEC pg/cluster-1/tde ${env}`)).toBe(`OK ${b64('x')}`);
    expect(await c.ask('GET pg/cluster-10')).toMatch(/^ERR FORBIDDEN /);
    expect(await c.ask('CREATE pg/cluster-1/new')).toMatch(/^ERR FORBIDDEN /);
  });

  it('works with servername omitted (the server certificate covers IP 127.0.0.1)', async () => {
    const gw = await tlsGateway();
    const { servername: _, ...noName } = base(gw);
    const c = await lineConn(tlsConnect({ ...noName, cert: pki.client.cert, key: pki.client.key }), 'secureConnect');
    expect(await c.ask('PING')).toBe('OK PONG');
    expect(payload(await c.ask('GET pg/cluster-1/tde'))).toHaveLength(44);
  });

  it('a certificate from the CA that matches no client gets only PING (and AUTH)', async () => {
    const gw = await tlsGateway();
    const c = await lineConn(tlsConnect({ ...base(gw), cert: pki.stranger.cert, key: pki.stranger.key }), 'secureConnect');
    expect(await c.ask('PING')).toBe('OK PONG');
    expect(await c.ask('GET pg/cluster-1/tde')).toMatch(/^ERR FORBIDDEN /);
    expect(await c.ask('AUTH tok-ops')).toBe('OK ops');
    expect(await c.ask('CREATE pg/cluster-1/by-ops')).toBe('OK 1');
  });

  it.each([
    ['no client certificate', (_p: TestPki): ConnectionOptions => ({})],
    ['a certificate with the same CN from another CA', (p: TestPki) => ({ cert: p.foreignClient.cert, key: p.foreignClient.key })],
    ["the foreign CA's own certificate", (p: TestPki) => ({ cert: p.foreignCa.cert, key: p.foreignCa.key })],
    [
      "the server's certificate (serverAuth only) used as a client certificate",
      (p: TestPki) => ({ cert: p.server.cert, key: p.server.key }),
    ],
  ])('%s: the handshake fails or the connection is dropped, nothing is served', async (_what, extra) => {
    const gw = await tlsGateway();
    const result = await attempt({ ...base(gw), ...extra(pki) });
    // In TLS 1.3 the client finishes its side before the server checks the certificate: the
    // server then sends an alert and closes, before any request is answered.
    expect(result.data).toBe('');
    expect(result.timedOut).toBe(false);
    // The server saw (and logged) a refused handshake.
    await waitFor(() => gw.logLines.some((l) => l.includes('TLS handshake refused')));
    // And the gateway still serves the right client.
    const c = await lineConn(tlsConnect({ ...base(gw), cert: pki.client.cert, key: pki.client.key }), 'secureConnect');
    expect(await c.ask('PING')).toBe('OK PONG');
  });

  it('a TLS 1.2-only client is refused', async () => {
    const gw = await tlsGateway();
    const result = await attempt({ ...base(gw), cert: pki.client.cert, key: pki.client.key, maxVersion: 'TLSv1.2' });
    expect(result.secure).toBe(false);
    expect(result.data).toBe('');
    expect(result.error).toMatch(/PROTOCOL_VERSION/);
    await waitFor(() => gw.logLines.some((l) => l.includes('TLS handshake refused')));
  });

  it("a client that does not trust the server's CA refuses it (the server certificate is checked too)", async () => {
    const gw = await tlsGateway();
    const result = await attempt({ ...base(gw), ca: pki.foreignCa.cert, cert: pki.client.cert, key: pki.client.key });
    expect(result.secure).toBe(false);
    expect(result.error).toMatch(/CERT|VERIFY/);
  });
});

async function waitFor(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
