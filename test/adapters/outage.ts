// The outage suite every cloud adapter runs behind a real gateway, against its real KMS with faults
// injected from outside the SDK (a TCP relay and an HTTP fault proxy for LocalStack, the faults file of
// the in-repo GCP and Azure emulators): stale-if-error, revocation (by a request and by the canary),
// the breaker, throttling hints and warm-up. TTLs and breaker windows pass on an injected clock.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LOADERS } from '../../adapters/registry.js';
import type { AdapterModule } from '../../adapters/types.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { manualClock, type ManualClock } from '../helpers/clock.js';
import { fakeKms, fakeLoader } from '../helpers/fake-adapter.js';
import { okPayload as ok, rawConnect, startTestGateway, useRunningGateways, type RawConn, type TestGateway } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import type { Kek } from './conformance.js';

/** A KMS of the suite's own (or a private path to one), with faults it can switch on and off. */
export interface OutageKms {
  /** `kms.adapters`, as in the config file, for reaching it. */
  readonly adapters: Record<string, unknown>;
  newKek(): Promise<Kek>;
  /** Every call fails as an outage (`KMS_UNAVAILABLE`) until `up()`. */
  down(): Promise<void>;
  /** Clears every fault (down, throttled, slow). */
  up(): Promise<void>;
  /** The next `times` calls (every call without) are throttled with this Retry-After hint. */
  throttle(retryAfterMs: number, times?: number): Promise<void>;
  /** Every call is held back `ms` before the KMS handles it. */
  slow(ms: number): Promise<void>;
  disable(kek: Kek): Promise<void>;
  enable(kek: Kek): Promise<void>;
  dispose(): Promise<void>;
}

export interface OutageHarness {
  readonly scheme: string;
  readonly module: AdapterModule;
  open(): Promise<OutageKms>;
  /** A GET's reply while the KEK is disabled. */
  readonly deniedReply: string;
}

// The shipped defaults, named here so the clock moves by what they mean.
const TTL_MS = 300_000;
const STALE_IF_ERROR_MS = 3_600_000;
const TIMEOUT_MS = 2000;

const count = (lines: string[], text: string) => lines.filter((l) => l.includes(text)).length;

export function describeOutage(name: string, h: OutageHarness): void {
  describe(`${name}: outage and revocation through the gateway`, () => {
    const tmp = useTmpDirs();
    const running = useRunningGateways();
    let kms: OutageKms;
    const conns: RawConn[] = [];
    beforeAll(async () => {
      kms = await h.open();
    }, 120_000);
    afterAll(() => kms?.dispose());
    afterEach(async () => {
      for (const c of conns.splice(0)) c.close();
      await kms.up();
    });

    const start = async (clock: ManualClock, overrides: ConfigInput = {}, dir?: string): Promise<TestGateway> => {
      const gw = await startTestGateway(
        dir ?? (await tmp()),
        {
          ...overrides,
          keys: { autoCreate: false, ...overrides.keys },
          // The canary runs when a test says so (runOnce), not on a timer racing the test.
          kms: { timeoutMs: TIMEOUT_MS, canaryIntervalMs: 0, ...overrides.kms, adapters: kms.adapters },
          cache: { ttlMs: TTL_MS, staleIfErrorMs: STALE_IF_ERROR_MS, ...overrides.cache },
        },
        { loaders: { ...DEFAULT_LOADERS, fake: fakeLoader, [h.scheme]: async () => h.module }, clock },
      );
      running.push(gw);
      return gw;
    };
    const connect = async (gw: TestGateway) => {
      const c = await rawConnect(gw.socketPath as string);
      conns.push(c);
      return c;
    };
    const calls = (gw: TestGateway) => gw.adapterCalls.length;

    it('stale-if-error: past its TTL a cached DEK is served while the KMS is down (counted, warned once), until staleIfErrorMs', async () => {
      const kek = await kms.newKek();
      const clock = manualClock();
      const gw = await start(clock);
      const c = await connect(gw);
      expect(await c.ask(`CREATE out/stale ${kek.uri}`)).toBe('OK 1');
      const dek = ok(await c.ask('GET out/stale'));
      await kms.down();
      clock.advance(TTL_MS + 1);
      const before = calls(gw);
      expect(await c.ask('GET out/stale')).toBe(`OK ${dek}`);
      expect(calls(gw)).toBeGreaterThan(before); // it did try the KMS first
      expect(await c.ask('GET out/stale')).toBe(`OK ${dek}`);
      expect(gw.cache.stats.staleServed).toBe(2);
      expect(count(gw.logLines, 'serving a DEK past its TTL')).toBe(1);
      clock.advance(STALE_IF_ERROR_MS - 1000);
      expect(await c.ask('GET out/stale')).toBe(`OK ${dek}`);
      clock.advance(1000); // TTL + staleIfErrorMs have passed: gone, and zeroized
      expect(await c.ask('GET out/stale')).toMatch(/^ERR KMS_UNAVAILABLE /);
      expect(gw.cache.stats.staleServed).toBe(3);
      await kms.up();
      clock.advance(60_000); // past any breaker window
      expect(await c.ask('GET out/stale')).toBe(`OK ${dek}`);
    });

    it('a KEK disabled while its DEKs are cached: refused at the first request that reaches the KMS, every DEK under it zeroized, never served stale; enabled: served again', async () => {
      const kek = await kms.newKek();
      const clock = manualClock();
      const gw = await start(clock);
      const c = await connect(gw);
      expect(await c.ask(`CREATE rev/old ${kek.uri}`)).toBe('OK 1');
      const old = ok(await c.ask('GET rev/old'));
      clock.advance(200_000);
      expect(await c.ask(`CREATE rev/new ${kek.uri}`)).toBe('OK 1');
      const fresh = ok(await c.ask('GET rev/new'));
      await kms.disable(kek);
      // Nothing has reached the KMS since: within their TTL both are still served (the canary bounds this).
      expect(await c.ask('GET rev/new')).toBe(`OK ${fresh}`);
      clock.advance(TTL_MS - 200_000 + 1); // rev/old past its TTL, rev/new not
      expect(await c.ask('GET rev/old')).toBe(h.deniedReply);
      expect(gw.health.status(kek.uri)).toMatchObject({ state: 'denied', code: 'KMS_DENIED' });
      expect(gw.cache.size).toBe(0);
      expect(count(gw.logLines, 'KEK denied by the KMS')).toBe(1);
      expect(await c.ask('GET rev/new')).toBe(h.deniedReply);
      // Stale-if-error never serves under a denied KEK: the KMS down now changes nothing.
      await kms.down();
      expect(await c.ask('GET rev/new')).toMatch(/^ERR KMS_UNAVAILABLE /);
      expect(gw.cache.stats.staleServed).toBe(0);
      await kms.up();
      await kms.enable(kek);
      expect(await c.ask('GET rev/old')).toBe(`OK ${old}`);
      expect(await c.ask('GET rev/new')).toBe(`OK ${fresh}`);
      expect(gw.health.status(kek.uri).state).toBe('ok');
    });

    it('with no traffic, one canary round (kms.canaryIntervalMs) finds a disabled KEK and zeroizes its DEKs; re-enabled, the next round clears it', async () => {
      const kek = await kms.newKek();
      const clock = manualClock();
      const gw = await start(clock);
      const c = await connect(gw);
      expect(await c.ask(`CREATE can/key ${kek.uri}`)).toBe('OK 1');
      const dek = ok(await c.ask('GET can/key'));
      await kms.disable(kek);
      await gw.canary.runOnce();
      expect(gw.health.status(kek.uri)).toMatchObject({ state: 'denied', code: 'KMS_DENIED' });
      expect(gw.cache.peek('can/key', 1)).toBeUndefined();
      expect(gw.readiness().ready).toBe(false);
      expect(await c.ask('GET can/key')).toBe(h.deniedReply); // well within its TTL
      await kms.enable(kek);
      await gw.canary.runOnce();
      expect(gw.health.status(kek.uri).state).toBe('ok');
      expect(gw.readiness().ready).toBe(true);
      expect(await c.ask('GET can/key')).toBe(`OK ${dek}`);
    });

    it('the breaker opens after kms.breaker.failures, fails fast without calling the KMS, and closes after openMs with one probe', async () => {
      const kek = await kms.newKek();
      const clock = manualClock();
      const failures = 3;
      const openMs = 10_000;
      const gw = await start(clock, { kms: { breaker: { failures, openMs } } });
      const c = await connect(gw);
      const c2 = await connect(gw);
      for (const id of ['brk/a', 'brk/b']) expect(await c.ask(`CREATE ${id} ${kek.uri}`)).toBe('OK 1');
      gw.cache.clear();
      await kms.down();
      for (let i = 0; i < failures; i++) expect(await c.ask('GET brk/a')).toMatch(/^ERR KMS_UNAVAILABLE /);
      const reached = calls(gw);
      const times: number[] = [];
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        expect(await c.ask('GET brk/a')).toMatch(/^ERR KMS_UNAVAILABLE .*circuit open/);
        times.push(performance.now() - t0);
      }
      expect(calls(gw)).toBe(reached);
      times.sort((a, b) => a - b);
      const [median, worst] = [times[10] as number, times[19] as number];
      console.log(
        `[outage] ${name}: breaker open, GET failed fast in ${median.toFixed(2)} ms (median of 20, worst ${worst.toFixed(2)} ms; kms.timeoutMs ${TIMEOUT_MS})`,
      );
      expect(worst).toBeLessThan(50);

      // openMs later, still down: one probe reaches the KMS, fails, and the breaker opens again.
      clock.advance(openMs);
      expect(await c.ask('GET brk/a')).toMatch(/^ERR KMS_UNAVAILABLE /);
      expect(calls(gw)).toBeGreaterThan(reached);
      const probed = calls(gw);
      expect(await c.ask('GET brk/a')).toMatch(/circuit open/);
      expect(calls(gw)).toBe(probed);

      // Back up, openMs later: one probe at a time (the KMS made slow so the two overlap), then closed.
      await kms.up();
      await kms.slow(300);
      clock.advance(openMs);
      const replies = await Promise.all([c.ask('GET brk/a'), c2.ask('GET brk/b')]);
      expect(replies.filter((r) => r.startsWith('OK ')).length).toBe(1);
      expect(replies.filter((r) => /circuit open/.test(r)).length).toBe(1);
      expect(calls(gw)).toBe(probed + 1);
      await kms.up();
      expect(await c.ask('GET brk/b')).toMatch(/^OK /);
      expect(await c.ask('GET brk/a')).toMatch(/^OK /);
    });

    it('throttling: retried after the Retry-After hint when it fits the deadline; THROTTLED at once when it does not, and held back until it passes', async () => {
      const kek = await kms.newKek();
      const clock = manualClock();
      const gw = await start(clock);
      const c = await connect(gw);
      expect(await c.ask(`CREATE thr/a ${kek.uri}`)).toBe('OK 1');
      const dek = ok(await c.ask('GET thr/a'));
      gw.cache.clear();

      await kms.throttle(1000, 1);
      let reached = calls(gw);
      let t0 = performance.now();
      expect(await c.ask('GET thr/a')).toBe(`OK ${dek}`);
      const waited = performance.now() - t0;
      console.log(`[outage] ${name}: throttled once with Retry-After 1 s, served after ${waited.toFixed(0)} ms`);
      expect(waited).toBeGreaterThanOrEqual(950);
      expect(waited).toBeLessThan(TIMEOUT_MS);
      expect(calls(gw) - reached).toBe(2);

      gw.cache.clear();
      await kms.throttle(5000);
      reached = calls(gw);
      t0 = performance.now();
      expect(await c.ask('GET thr/a')).toMatch(/^ERR THROTTLED /);
      expect(performance.now() - t0).toBeLessThan(500);
      expect(calls(gw) - reached).toBe(1);
      // The hint holds the next calls back without asking the KMS...
      expect(await c.ask('GET thr/a')).toMatch(/^ERR THROTTLED .*asked to wait/);
      expect(calls(gw) - reached).toBe(1);
      // ...until it has passed.
      await kms.up();
      clock.advance(5000);
      expect(await c.ask('GET thr/a')).toBe(`OK ${dek}`);
    });

    it('warm-up with one KMS down: start succeeds, the reachable KMS’s keys are warm (no KMS call on first GET), the failures are logged', async () => {
      const kek = await kms.newKek();
      const clock = manualClock();
      const dir = await tmp();
      const seed = await start(clock, {}, dir);
      const c0 = await connect(seed);
      expect(await c0.ask(`CREATE pg/cloud ${kek.uri}`)).toBe('OK 1');
      expect(await c0.ask('CREATE pg/other fake://kek-other')).toBe('OK 1');
      const dek = ok(await c0.ask('GET pg/cloud'));
      c0.close();
      await seed.close();

      // This KMS up, the other (fake://) down.
      fakeKms.mode = 'down';
      const gw = await start(clock, { cache: { warm: ['pg/*'] }, kms: { timeoutMs: 500 } }, dir);
      expect(gw.warmed).toMatchObject({ warmed: 1, failed: { KMS_UNAVAILABLE: 1 } });
      expect(count(gw.logLines, 'cache warm-up finished with failures')).toBe(1);
      const c = await connect(gw);
      const before = calls(gw);
      expect(await c.ask('GET pg/cloud')).toBe(`OK ${dek}`);
      expect(calls(gw)).toBe(before);
      await gw.close();
      fakeKms.mode = 'ok';

      // This KMS down: start still succeeds (within the deadline), the fake's key is warm.
      await kms.down();
      const t0 = performance.now();
      const gw2 = await start(clock, { cache: { warm: ['pg/*'] } }, dir);
      expect(performance.now() - t0).toBeLessThan(TIMEOUT_MS + 3000);
      expect(gw2.warmed).toMatchObject({ warmed: 1, failed: { KMS_UNAVAILABLE: 1 } });
      expect(count(gw2.logLines, 'cache warm-up finished with failures')).toBe(1);
      expect(gw2.cache.peek('pg/other', 1)).toBeDefined();
      expect(gw2.readiness().ready).toBe(false);
      await kms.up();
      const c2 = await connect(gw2);
      expect(await c2.ask('GET pg/cloud')).toBe(`OK ${dek}`);
    });
  });
}
