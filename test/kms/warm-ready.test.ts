import { afterEach, describe, expect, it } from 'vitest';
import { fakeKms } from '../helpers/fake-adapter.js';
import { rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();
afterEach(() => fakeKms.reset());

/** Makes keys in a fresh gateway's store and stops it, so the next start has a cold cache. */
async function seedKeys(dir: string, lines: string[]): Promise<void> {
  const gw = await startTestGateway(dir);
  const c = await rawConnect(gw.socketPath as string);
  for (const line of lines) expect(await c.ask(line)).toMatch(/^OK /);
  c.close();
  await gw.close();
}

describe('cache warm-up (cache.warm)', () => {
  it('unwraps the current version of every matching key at start, so the first GET needs no KMS call', async () => {
    const dir = await tmp();
    await seedKeys(dir, ['CREATE pg/a', 'CREATE pg/b', 'ROTATE pg/b', 'CREATE app/c']);
    const gw = await startTestGateway(dir, { cache: { warm: ['pg/*'] } });
    running.push(gw);
    expect(gw.warmed).toMatchObject({ warmed: 2, failed: {} });
    const unwraps = () => gw.adapterCalls.filter((c) => c.op === 'unwrap').length;
    expect(unwraps()).toBe(2);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('GET pg/a')).toMatch(/^OK /);
    expect(await c.ask('GET pg/b')).toMatch(/^OK /);
    expect(unwraps()).toBe(2);
    expect(await c.ask('GET app/c')).toMatch(/^OK /);
    expect(unwraps()).toBe(3);
    expect(gw.readiness()).toMatchObject({ ready: true, warm: 'done' });
    c.close();
  });

  it('tolerates a KMS that is down: start succeeds, the reachable keys are warm, the failures are counted and logged', async () => {
    const dir = await tmp();
    await seedKeys(dir, ['CREATE pg/local', 'CREATE pg/cloud fake://kek-down']);
    fakeKms.mode = 'down';
    const gw = await startTestGateway(dir, { cache: { warm: ['pg/*'] }, kms: { timeoutMs: 200 } });
    running.push(gw);
    expect(gw.warmed).toMatchObject({ warmed: 1, failed: { KMS_UNAVAILABLE: 1 } });
    expect(gw.logLines.some((l) => l.includes('cache warm-up finished with failures'))).toBe(true);
    expect(gw.cache.peek('pg/local', 1)).toBeDefined();
    // The KEK that failed is in use and not ok: not ready, and /readyz says which and why.
    const readiness = gw.readiness();
    expect(readiness.ready).toBe(false);
    expect(readiness.keks).toContainEqual(
      expect.objectContaining({ kek: 'fake://kek-down', state: 'unavailable', code: 'KMS_UNAVAILABLE' }),
    );
    fakeKms.mode = 'ok';
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('GET pg/cloud')).toMatch(/^OK /);
    expect(gw.readiness().ready).toBe(true);
    c.close();
  });

  it('refuses a glob with spaces at start-up, naming the field', async () => {
    await expect(startTestGateway(await tmp(), { cache: { warm: ['pg/ *'] } })).rejects.toThrow(/cache\.warm\.0/);
  });
});

describe('readiness and the canary', () => {
  it('is not ready before the first canary round has proved the KEKs in use, ready after', async () => {
    const gw = await startTestGateway(await tmp(), { kms: { canaryIntervalMs: 3_600_000 } });
    running.push(gw);
    await gw.canary.runOnce();
    const ready = gw.readiness();
    expect(ready.ready).toBe(true);
    expect(ready.keks.map((k) => k.state)).toEqual(['ok']);
    const canaryCalls = gw.adapterCalls.filter((c) => c.op === 'wrap' || c.op === 'unwrap');
    expect(canaryCalls.length).toBeGreaterThanOrEqual(2);
  });

  it('a KEK denied with no traffic: one canary round zeroizes its cached DEKs and turns readiness red; recovery turns it green', async () => {
    const gw = await startTestGateway(await tmp(), { kms: { canaryIntervalMs: 3_600_000 } });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('CREATE app/k fake://kek-1')).toBe('OK 1');
    const dek = gw.cache.peek('app/k', 1);
    expect(dek).toBeDefined();
    fakeKms.mode = 'deny';
    await gw.canary.runOnce();
    expect(dek?.every((b) => b === 0)).toBe(true);
    expect(gw.readiness()).toMatchObject({ ready: false });
    expect(gw.readiness().keks).toContainEqual(expect.objectContaining({ kek: 'fake://kek-1', state: 'denied', code: 'KMS_DENIED' }));
    expect(await c.ask('GET app/k')).toMatch(/^ERR KMS_DENIED /);
    fakeKms.mode = 'ok';
    await gw.canary.runOnce();
    expect(gw.readiness().ready).toBe(true);
    expect(await c.ask('GET app/k')).toMatch(/^OK /);
    c.close();
  });
});
