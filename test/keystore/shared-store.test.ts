// Two and three gateways, each with its own dataDir, sharing one S3 key store (LocalStack) and one
// KEK (LocalStack KMS): the races of gateways with no coordinator, freshness across hosts, an
// unreachable store, and a gateway killed with -9 in the middle of its compare-and-swap loops.
import { randomUUID } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, inject, it, vi } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.js';
import { objectNameFor } from '../../src/keystore/names.js';
import { openBackend } from '../../src/keystore/open.js';
import { serveProcess } from '../helpers/serve-process.js';
import type { KeyStoreSettings } from '../../src/keystore/settings.js';
import { parseStoreUrl } from '../../src/keystore/url.js';
import { KeyRecordSchema } from '../../src/keystore/types.js';
import { b64, okPayload, rawConnect, startTestGateway, useRunningGateways, type RawConn, type TestGateway } from '../helpers/gateway.js';
import { azuriteServiceClient } from '../helpers/azurite.js';
import { fakeGcsClient } from '../helpers/fake-gcs.js';
import { freePort } from '../helpers/net.js';
import { useS3Bucket } from '../helpers/s3.js';
import { useTmpDirs } from '../helpers/tmp.js';

const ls = inject('localstack');
const gcs = inject('fakeGcs');
const azurite = inject('azurite');
// The gateways' Azure credential (the account key; see src/keystore/azure/index.ts).
process.env['AZURE_STORAGE_KEY'] = azurite.key;
process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';

const tmp = useTmpDirs();
const running = useRunningGateways();
const { bucket } = await useS3Bucket(ls.endpoint, ls.region, 'kmsgw-shared');
await fakeGcsClient(gcs.endpoint).createBucket(bucket);
await azuriteServiceClient(azurite).createContainer(bucket);

const KEK = `aws-kms://${ls.keyA}`;

/** A shared object store the gateways of these tests can use: its `keystore` settings under a prefix. */
interface SharedStore {
  readonly name: string;
  keystore(prefix: string): Pick<KeyStoreSettings, 'url' | 'endpoint' | 'forcePathStyle'> & { region?: string };
}
const S3: SharedStore = {
  name: 'S3 (LocalStack)',
  keystore: (prefix) => ({ url: `s3://${bucket}/${prefix}`, endpoint: ls.endpoint, forcePathStyle: true, region: ls.region }),
};
const GCS: SharedStore = {
  name: 'Cloud Storage (fake-gcs-server)',
  keystore: (prefix) => ({ url: `gs://${bucket}/${prefix}`, endpoint: gcs.endpoint, forcePathStyle: false }),
};
const AZURE: SharedStore = {
  name: 'Azure Blob (Azurite)',
  keystore: (prefix) => ({ url: `azblob://${azurite.account}/${bucket}/${prefix}`, endpoint: azurite.endpoint, forcePathStyle: false }),
};
const STORES = [S3, GCS, AZURE];

interface HostOptions {
  readonly store?: SharedStore;
  /** Reach the store through this endpoint instead (a relay that can be cut). */
  readonly endpoint?: string;
  readonly refreshMs?: number;
  readonly timeoutMs?: number;
  readonly limit?: number;
}

/** Config of one "host": its own dataDir (from startTestGateway), the shared store (default S3) under `prefix`. */
function hostConfig(prefix: string, extra: HostOptions = {}): ConfigInput {
  return {
    keystore: {
      ...(extra.store ?? S3).keystore(prefix),
      ...(extra.endpoint === undefined ? {} : { endpoint: extra.endpoint }),
      refreshMs: extra.refreshMs ?? 0, // tests call store.refresh() unless they test the timer
      timeoutMs: extra.timeoutMs ?? 5_000,
    },
    keys: { defaultKek: KEK, ...(extra.limit === undefined ? {} : { maxEncryptionsPerVersion: extra.limit }) },
    kms: { adapters: { 'aws-kms': { endpoint: ls.endpoint, region: ls.region } } },
  };
}

interface Host {
  readonly gw: TestGateway;
  readonly c: RawConn;
}

async function hosts(n: number, extra: HostOptions & { prefix?: string } = {}) {
  const prefix = extra.prefix ?? `p-${randomUUID().slice(0, 8)}/`;
  const out: Host[] = [];
  for (let i = 0; i < n; i++) {
    const gw = await startTestGateway(await tmp(), hostConfig(prefix, extra));
    running.push(gw);
    out.push({ gw, c: await rawConnect(gw.socketPath as string) });
  }
  return { prefix, hosts: out };
}

/** The record of `id` as the store holds it, read with a backend of its own. */
async function storedRecord(prefix: string, id: string, store: SharedStore = S3) {
  const settings = store.keystore(prefix);
  const backend = await openBackend(parseStoreUrl(settings.url as string), settings, { readOnly: true });
  try {
    const got = await backend.read(id, AbortSignal.timeout(10_000));
    return KeyRecordSchema.parse(JSON.parse(got?.body.toString('utf8') ?? 'null'));
  } finally {
    await backend.close();
  }
}

/** Runs `count` rounds, `parallel` at a time; `worker` (0 to parallel - 1) owns its connections. */
async function rounds(count: number, parallel: number, round: (i: number, worker: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async (_, worker) => {
      for (let i = next++; i < count; i = next++) await round(i, worker);
    }),
  );
}

describe.each(STORES)('gateways sharing one key store: $name', (store) => {
  it('race ×100: three gateways creating the same new key on first use at once all serve the one DEK that won', async () => {
    const { prefix, hosts: [a, b, c] = [] } = await hosts(3, { store });
    if (!a || !b || !c) throw new Error('hosts');
    // One connection per gateway and round would serialise; open a few per gateway.
    const conns = await Promise.all([a, b, c].flatMap((h) => Array.from({ length: 4 }, () => rawConnect(h.gw.socketPath as string))));
    await rounds(100, 4, async (i, w) => {
      const id = `race/create/${i}`;
      const replies = await Promise.all([0, 1, 2].map((g) => (conns[g * 4 + w] as RawConn).ask(`GET ${id}`)));
      for (const r of replies) expect(r).toMatch(/^OK /);
      expect(new Set(replies).size).toBe(1);
    });
    for (const conn of conns) conn.close();
    // One version each, in the bucket.
    const record = await storedRecord(prefix, 'race/create/99', store);
    expect(record.versions).toHaveLength(1);
  }, 120_000);

  it('a key created on A is usable at once on B; a ROTATE on A is used by B for DEC at once and for ENC after a refresh', async () => {
    const { prefix, hosts: [a, b] = [] } = await hosts(2, { store });
    if (!a || !b) throw new Error('hosts');
    expect(await a.c.ask('CREATE app/users')).toBe('OK 1');
    const dek = okPayload(await a.c.ask('GET app/users'));
    expect(await b.c.ask('GET app/users')).toBe(`OK ${dek}`);
    const env1 = okPayload(await a.c.ask(`ENC app/users ${b64('one')}`));
    expect(await b.c.ask(`DEC app/users ${env1}`)).toBe(`OK ${b64('one')}`);

    expect(await a.c.ask('ROTATE app/users')).toBe('OK 2');
    const env2 = okPayload(await a.c.ask(`ENC app/users ${b64('two')}`));
    // B holds version 1 only; an envelope naming version 2 makes it look again, at once.
    expect(await b.c.ask(`DEC app/users ${env2}`)).toBe(`OK ${b64('two')}`);
    await b.gw.store.refresh();
    const info = JSON.parse(okPayload(await b.c.ask('INFO app/users'))) as { versions: Array<{ version: number }>; store: string };
    expect(info.store).toBe(store.keystore(prefix).url);
    const envB = okPayload(await b.c.ask(`ENC app/users ${b64('three')}`));
    expect(await a.c.ask(`DEC app/users@2 ${envB}`)).toBe(`OK ${b64('three')}`);
  });

  it('B picks up a ROTATE made on A by itself within keystore.refreshMs', async () => {
    const prefix = `p-${randomUUID().slice(0, 8)}/`;
    const a = await startTestGateway(await tmp(), hostConfig(prefix, { store }));
    const b = await startTestGateway(await tmp(), hostConfig(prefix, { store, refreshMs: 200 }));
    running.push(a, b);
    const ca = await rawConnect(a.socketPath as string);
    const cb = await rawConnect(b.socketPath as string);
    expect(await ca.ask('CREATE k')).toBe('OK 1');
    expect(await cb.ask(`ENC k ${b64('x')}`)).toMatch(/^OK /);
    expect(await ca.ask('ROTATE k')).toBe('OK 2');
    await vi.waitFor(
      async () => {
        const env = okPayload(await cb.ask(`ENC k ${b64('x')}`));
        expect(await ca.ask(`DEC k@2 ${env}`)).toBe(`OK ${b64('x')}`);
      },
      { timeout: 5_000, interval: 50 },
    );
  });

  it('a DESTROY on A is honoured by B: its cached DEK is evicted and the version no longer decrypts', async () => {
    const { prefix, hosts: [a, b] = [] } = await hosts(2, { store });
    if (!a || !b) throw new Error('hosts');
    expect(await a.c.ask('CREATE old')).toBe('OK 1');
    const env1 = okPayload(await a.c.ask(`ENC old ${b64('secret')}`));
    expect(await b.c.ask(`DEC old ${env1}`)).toBe(`OK ${b64('secret')}`); // B caches v1's DEK
    expect(b.gw.cache.peek('old', 1)).toBeDefined();
    expect(await a.c.ask('ROTATE old')).toBe('OK 2');
    expect(await a.c.ask('DESTROY old@1')).toBe('OK 1');
    await b.gw.store.refresh();
    expect(b.gw.cache.peek('old', 1)).toBeUndefined();
    expect(await b.c.ask(`DEC old ${env1}`)).toBe('ERR DECRYPT_FAILED key version was destroyed');
    // The bucket holds no wrapped copy of version 1, nor does B's snapshot.
    const stored = await storedRecord(prefix, 'old', store);
    expect(stored.versions[0]).toMatchObject({ state: 'destroyed', wraps: [], commit: null });
  });

  it('keeps records only in the bucket and the snapshot, never in dataDir/keys', async () => {
    const { prefix, hosts: [a] = [] } = await hosts(1, { store });
    if (!a) throw new Error('hosts');
    expect(await a.c.ask('CREATE where/am/i')).toBe('OK 1');
    await a.gw.close();
    expect((await storedRecord(prefix, 'where/am/i', store)).id).toBe('where/am/i');
    expect(await readdir(join(a.gw.dir, 'data'))).not.toContain('keys');
    expect(await readdir(join(a.gw.dir, 'data', 'snapshot'))).toContain(objectNameFor('', 'where/am/i'));
  });
});

describe('gateways sharing one S3 key store', () => {
  it('race ×100: two concurrent ROTATEs on two gateways give two versions, none lost', async () => {
    const { prefix, hosts: [a, b] = [] } = await hosts(2);
    if (!a || !b) throw new Error('hosts');
    const conns = await Promise.all([a, b].flatMap((h) => Array.from({ length: 4 }, () => rawConnect(h.gw.socketPath as string))));
    await rounds(100, 4, async (i, w) => {
      const id = `race/rotate/${i}`;
      expect(await (conns[w] as RawConn).ask(`CREATE ${id}`)).toBe('OK 1');
      const replies = await Promise.all([conns[w], conns[4 + w]].map((conn) => (conn as RawConn).ask(`ROTATE ${id}`)));
      expect(replies.sort()).toEqual(['OK 2', 'OK 3']);
      const stored = await storedRecord(prefix, id);
      expect(stored.versions.map((v) => v.version)).toEqual([1, 2, 3]);
    });
    // Every version made by either gateway unwraps on the other.
    for (const v of [1, 2, 3]) expect(await b.c.ask(`GET race/rotate/7@${v}`)).toBe(await a.c.ask(`GET race/rotate/7@${v}`));
    for (const conn of conns) conn.close();
  }, 120_000);

  it('race ×100: the nonce budget of a version shared by three gateways stays one global bound', async () => {
    const limit = 12;
    const { prefix, hosts: trio } = await hosts(3, { limit });
    await rounds(100, 4, async (i) => {
      const id = `race/budget/${i}`;
      expect(await (trio[i % 3] as Host).gw.pipeline.open({ transport: 'internal' }).handle(`CREATE ${id}`)).toMatchObject({ ok: true });
      // Each gateway ENCs until refused; all at once.
      const made = await Promise.all(
        trio.map(async (h) => {
          const session = h.gw.pipeline.open({ transport: 'internal' });
          let ok = 0;
          for (;;) {
            const out = await session.handle(`ENC ${id} ${b64('x')}`);
            if (!out.ok) {
              expect(out).toMatchObject({ code: 'FORBIDDEN' });
              return ok;
            }
            ok++;
          }
        }),
      );
      const total = made.reduce((x, y) => x + y, 0);
      expect(total).toBeLessThanOrEqual(limit);
      const stored = await storedRecord(prefix, id);
      expect(stored.versions[0]?.encryptions).toBe(limit);
    });
  }, 180_000);
});

/** A TCP relay to LocalStack that can be cut: `hang` accepts and never answers (a black hole). */
async function switchableRelay(upstreamPort: number) {
  let mode: 'pass' | 'hang' = 'pass';
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client)).on('error', () => undefined);
    if (mode === 'hang') return;
    const upstream = connect(upstreamPort, '127.0.0.1');
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream)).on('error', () => client.destroy());
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
  });
  const port = await freePort();
  await new Promise<void>((done) => server.listen(port, '127.0.0.1', done));
  return {
    endpoint: `http://127.0.0.1:${port}`,
    set(next: 'pass' | 'hang') {
      mode = next;
      if (next === 'hang') for (const s of sockets) s.destroy();
    },
    close: () => new Promise<void>((done) => (sockets.forEach((s) => s.destroy()), server.close(() => done()))),
  };
}

describe('an unreachable store', () => {
  const relays: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    await Promise.all(relays.splice(0).map((r) => r.close()));
  });

  it('reads keep working from memory and the snapshot, writes fail with STORE_UNAVAILABLE in bounded time, nothing acknowledged is lost, and it recovers without a restart', async () => {
    const relay = await switchableRelay(Number(new URL(ls.endpoint).port));
    relays.push(relay);
    const prefix = `p-${randomUUID().slice(0, 8)}/`;
    const dir = await tmp();
    const first = await startTestGateway(dir, hostConfig(prefix, { endpoint: relay.endpoint, timeoutMs: 1_000 }));
    const c1 = await rawConnect(first.socketPath as string);
    expect(await c1.ask('CREATE hot')).toBe('OK 1');
    expect(await c1.ask('CREATE warm')).toBe('OK 1');
    const hot = okPayload(await c1.ask('GET hot'));
    const warm = okPayload(await c1.ask('GET warm'));
    const env = okPayload(await c1.ask(`ENC warm ${b64('kept')}`));
    c1.close();
    await first.close();

    relay.set('hang');
    // A gateway starts while the store is down, on its snapshot.
    const gw = await startTestGateway(dir, hostConfig(prefix, { endpoint: relay.endpoint, timeoutMs: 1_000 }));
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    const t0 = performance.now();
    expect(await c.ask('GET hot')).toBe(`OK ${hot}`);
    expect(await c.ask(`DEC warm ${env}`)).toBe(`OK ${b64('kept')}`);
    expect(await c.ask('GET warm')).toBe(`OK ${warm}`);
    const t1 = performance.now();
    const writes = await Promise.all([c.ask('ROTATE hot'), c.ask('CREATE brand/new'), c.ask('GET never/seen')]);
    for (const w of writes) expect(w).toMatch(/^ERR STORE_UNAVAILABLE /);
    // Each waits out at most one keystore.timeoutMs (1 s), never hangs.
    expect(performance.now() - t1).toBeLessThan(3_000);
    expect(t1 - t0).toBeLessThan(3_000);

    relay.set('pass');
    await vi.waitFor(async () => expect(await c.ask('ROTATE hot')).toBe('OK 2'), { timeout: 10_000, interval: 200 });
    expect(await c.ask('CREATE brand/new')).toBe('OK 1');
    const stored = await storedRecord(prefix, 'hot');
    expect(stored.versions.map((v) => v.version)).toEqual([1, 2]);
  }, 30_000);
});

describe('a gateway killed with -9 in the middle of its compare-and-swap loops', () => {
  it('leaves a valid record holding every version either gateway acknowledged', async () => {
    const prefix = `p-${randomUUID().slice(0, 8)}/`;
    const dir = await tmp();
    const cfg = hostConfig(prefix);
    const config = join(dir, 'kmsgw.json');
    await writeFile(
      config,
      JSON.stringify({
        ...cfg,
        dataDir: join(dir, 'data'),
        listen: { socket: { path: join(dir, 'gw.sock') } },
        keys: { ...cfg.keys, allowedKeks: ['*'] },
      }),
    );
    const served = serveProcess(config, { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test' });
    const child = served.child; // killed after the test, if still running, by serveProcess
    await served.log.waitFor((line) => line.includes('kmsgw ready'), 'kmsgw ready');

    const { hosts: [a] = [] } = await hosts(1, { prefix });
    if (!a) throw new Error('hosts');
    expect(await a.c.ask('CREATE contended')).toBe('OK 1');
    const victim = await rawConnect(join(dir, 'gw.sock'));
    // Both gateways rotate the one key as fast as they can; the child dies mid-stream.
    const acked: number[] = [];
    const victimLines: string[] = [];
    victim.socket.on('data', (chunk: Buffer | string) => victimLines.push(...chunk.toString().split('\n').filter(Boolean)));
    for (let i = 0; i < 60; i++) victim.write('ROTATE contended\n');
    const ours = (async () => {
      for (let i = 0; i < 30; i++) {
        const r = await a.c.ask('ROTATE contended');
        expect(r).toMatch(/^OK \d+$/);
        acked.push(Number(r.slice(3)));
      }
    })();
    await vi.waitFor(() => expect(victimLines.length).toBeGreaterThanOrEqual(10), { timeout: 20_000, interval: 5 });
    child.kill('SIGKILL');
    await ours;
    for (const line of victimLines) {
      expect(line).toMatch(/^OK \d+$/);
      acked.push(Number(line.slice(3)));
    }
    const stored = await storedRecord(prefix, 'contended');
    const versions = stored.versions.map((v) => v.version);
    // Strictly increasing from 1, each with a wrapped DEK and a commitment tag.
    expect(versions).toEqual(versions.map((_, i) => i + 1));
    for (const v of stored.versions) expect(v.wraps.length > 0 && v.commit).toBeTruthy();
    // Nothing acknowledged is lost, and every version unwraps.
    for (const v of acked) expect(versions).toContain(v);
    expect(new Set(acked).size).toBe(acked.length);
    await a.gw.store.refresh();
    for (const v of [1, ...acked.slice(-3)]) expect(await a.c.ask(`GET contended@${v}`)).toMatch(/^OK /);
  }, 60_000);
});
