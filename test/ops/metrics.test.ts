import { describe, expect, it } from 'vitest';
import { fakeKms } from '../helpers/fake-adapter.js';
import { okPayload, rawConnect, startTestGateway, useRunningGateways, type TestGateway } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { METRIC, METRIC_NAMES } from '../../src/metrics/metrics.js';
import { scrape } from './prometheus.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

async function gateway(overrides: ConfigInput = {}): Promise<TestGateway & { opsPort: number }> {
  const gw = await startTestGateway(await tmp(), {
    ...overrides,
    // One attempt per call and no canary: each request makes exactly the KMS calls the test counts.
    kms: { retry: { attempts: 1 }, canaryIntervalMs: 0, ...overrides.kms },
    ops: { listen: '127.0.0.1:0', ...overrides.ops },
  });
  running.push(gw);
  return { ...gw, opsPort: gw.ops?.port as number };
}

describe('/metrics', () => {
  it('counts requests by verb and code, KMS calls by outcome, cache hits and misses, and moves as requests are made', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    const before = await scrape(gw.opsPort);
    for (const name of METRIC_NAMES) before.family(name);
    expect(before.value(METRIC.requests)).toBe(0);

    expect(await c.ask('CREATE pg/wal-7f3a fake://kek-1')).toMatch(/^OK /);
    const dek = okPayload(await c.ask('GET pg/wal-7f3a')); // seeded by CREATE: a hit
    gw.cache.evict('pg/wal-7f3a', 1);
    expect(okPayload(await c.ask('GET pg/wal-7f3a'))).toBe(dek); // a miss: one unwrap
    expect(await c.ask('BOGUS')).toMatch(/^ERR UNKNOWN_VERB /);
    gw.cache.evict('pg/wal-7f3a', 1);
    fakeKms.mode = 'down';
    expect(await c.ask('GET pg/wal-7f3a')).toMatch(/^ERR KMS_UNAVAILABLE /);
    fakeKms.mode = 'deny';
    expect(await c.ask('GET pg/wal-7f3a')).toMatch(/^ERR KMS_DENIED /);

    const after = await scrape(gw.opsPort);
    expect(after.value(METRIC.requests, { verb: 'CREATE', code: 'OK' })).toBe(1);
    expect(after.value(METRIC.requests, { verb: 'GET', code: 'OK' })).toBe(2);
    expect(after.value(METRIC.requests, { verb: 'GET', code: 'KMS_UNAVAILABLE' })).toBe(1);
    expect(after.value(METRIC.requests, { verb: 'GET', code: 'KMS_DENIED' })).toBe(1);
    expect(after.value(METRIC.requests, { verb: 'invalid', code: 'UNKNOWN_VERB' })).toBe(1);
    // The three GETs that waited on the KMS are each timed; the one from memory is sampled (one in 16), and was not.
    expect(after.histogramCount(METRIC.requestDuration, 'verb="GET"')).toBe(3);

    const kms = (operation: string, outcome: string) => after.value(METRIC.kmsRequests, { adapter: 'fake', operation, outcome });
    expect(kms('wrap', 'ok')).toBe(1);
    expect(kms('unwrap', 'ok')).toBe(1);
    expect(kms('unwrap', 'unavailable')).toBe(1);
    expect(kms('unwrap', 'denied')).toBe(1);
    expect(after.histogramCount(METRIC.kmsDuration, 'adapter="fake",operation="unwrap"')).toBe(3);

    expect(after.value(METRIC.cacheHits)).toBe(gw.cache.stats.hits);
    expect(after.value(METRIC.cacheHits)).toBeGreaterThanOrEqual(1);
    expect(after.value(METRIC.cacheMisses)).toBe(3);
    expect(after.value(METRIC.cacheEntries)).toBe(gw.cache.size);
    expect(after.value(METRIC.kekState, { kek: 'fake://kek-1', state: 'denied' })).toBe(1);
    expect(after.value(METRIC.kekState, { kek: 'fake://kek-1', state: 'ok' })).toBe(0);
    expect(after.value(METRIC.connections)).toBe(1);
    expect(after.value(METRIC.storeOperations, { operation: 'write', outcome: 'ok' })).toBeGreaterThanOrEqual(1);
    // The default process metrics come along, unprefixed.
    expect(after.families.has('process_cpu_user_seconds_total')).toBe(true);

    // Never a key id, never key material.
    const dekBytes = Buffer.from(dek, 'base64');
    expect(dekBytes).toHaveLength(32);
    for (const secret of [dek, dekBytes.toString('hex'), dekBytes.toString('base64url'), 'pg/wal-7f3a', 'wal-7f3a']) {
      expect(after.text).not.toContain(secret);
    }
    c.close();
  });

  it('times one reply from memory in 16, each sample counting 16, so the histogram count follows the requests', async () => {
    const gw = await gateway();
    const session = gw.pipeline.open({ transport: 'internal' });
    await session.handle('CREATE k fake://kek-1');
    for (let i = 0; i < 47; i++) expect(session.handle('GET k')).toMatchObject({ ok: true });
    const s = await scrape(gw.opsPort);
    expect(s.value(METRIC.requests, { verb: 'GET' })).toBe(47);
    // Requests 0 (CREATE, waited: weight 1), 16 and 32 (GETs from memory: 16 each) were timed.
    expect(s.histogramCount(METRIC.requestDuration, 'verb="GET"')).toBe(32);
    expect(s.histogramCount(METRIC.requestDuration, 'verb="CREATE"')).toBe(1);
  });

  it('reports the highest nonce budget used over the key versions held, and the store conflicts counter', async () => {
    // A limit of 1000 claims blocks of one encryption: the stored counter follows every ENC.
    const gw = await gateway({ keys: { maxEncryptionsPerVersion: 1000 } });
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('CREATE a fake://kek-1')).toMatch(/^OK /);
    expect(await c.ask('CREATE b fake://kek-1')).toMatch(/^OK /);
    for (let i = 0; i < 10; i++) expect(await c.ask('ENC a aGVsbG8=')).toMatch(/^OK /);
    await c.ask('ENC b aGVsbG8=');
    const s = await scrape(gw.opsPort);
    const ratio = s.value(METRIC.nonceBudget);
    // 10 encryptions of a, and at most two blocks (of 1) claimed ahead.
    expect(ratio).toBeGreaterThanOrEqual(10 / 1000);
    expect(ratio).toBeLessThanOrEqual(12 / 1000);
    expect(s.value(METRIC.storeConflicts)).toBe(0);
    expect(s.value(METRIC.auditDropped)).toBe(0);
    c.close();
  });

  it('collects no request or KMS call metrics with ops.metrics: false, and still the gauges', async () => {
    const gw = await gateway({ ops: { metrics: false } });
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('CREATE k fake://kek-1')).toMatch(/^OK /);
    expect(await c.ask('GET k')).toMatch(/^OK /);
    const s = await scrape(gw.opsPort);
    expect(s.value(METRIC.requests)).toBe(0);
    expect(s.value(METRIC.kmsRequests)).toBe(0);
    expect(s.value(METRIC.cacheHits)).toBe(1);
    expect(s.value(METRIC.kekState, { kek: 'fake://kek-1', state: 'ok' })).toBe(1);
    c.close();
  });

  it('keeps one registry per gateway: two gateways in a process count apart', async () => {
    const a = await gateway();
    const b = await gateway();
    const c = await rawConnect(a.socketPath as string);
    await c.ask('PING');
    await c.ask('PING');
    expect((await scrape(a.opsPort)).value(METRIC.requests, { verb: 'PING' })).toBe(2);
    expect((await scrape(b.opsPort)).value(METRIC.requests, { verb: 'PING' })).toBe(0);
    expect(a.metrics.registry).not.toBe(b.metrics.registry);
    c.close();
  });
});
