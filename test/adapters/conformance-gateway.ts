// The gateway half of the conformance suite (conformance.ts): the scenarios every adapter must pass
// behind a real gateway, written once and run by each cloud's test file with its harness.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LOADERS } from '../../adapters/registry.js';
import type { Clock } from '../../src/cache/dek-cache.js';
import { createClient } from '../../src/client/index.js';
import { fileNameFor } from '../../src/keystore/file/index.js';
import { b64, okPayload as ok, rawConnect, startTestGateway, useRunningGateways, type TestGateway } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { manualClock } from '../helpers/clock.js';
import type { KeyRecord, VersionRecord } from '../../src/keystore/types.js';
import type { KeyInfo } from '../../src/keys/versions.js';
import type { ConformanceHarness, KmsTarget, StoppableTarget } from './conformance.js';

/**
 * Registers tests only when the adapter has the capability they need (a local KEK file
 * cannot be disabled or stopped), so nothing shows as skipped in CI.
 */
export function when(capability: unknown): { it: typeof it; describe: typeof describe } | undefined {
  return capability ? { it, describe } : undefined;
}

/** A test gateway (keys not auto-created) with the harness's adapter, talking to `target`. */
export function startHarnessGateway(
  h: ConformanceHarness,
  dir: string,
  opts: { target?: KmsTarget; timeoutMs?: number; clock?: Clock } = {},
): Promise<TestGateway> {
  const kms = { timeoutMs: opts.timeoutMs ?? 2000, adapters: (opts.target ?? h.target).adapters };
  const loaders = { ...DEFAULT_LOADERS, [h.scheme]: async () => h.module };
  return startTestGateway(dir, { keys: { autoCreate: false }, kms }, { loaders, ...(opts.clock ? { clock: opts.clock } : {}) });
}

export function describeThroughGateway(name: string, h: ConformanceHarness): void {
  describe(`${name} through the gateway`, () => {
    const tmp = useTmpDirs();
    const running = useRunningGateways();
    const gateway = async (dir: string, opts: Parameters<typeof startHarnessGateway>[2] = {}) => {
      const gw = await startHarnessGateway(h, dir, opts);
      running.push(gw);
      return gw;
    };

    it('CREATE, GET, restart with an empty cache, GET: same DEK, one adapter call per start; INFO names the KEK version', async () => {
      const kek = await h.target.newKek();
      const dir = await tmp();
      const gw = await gateway(dir);
      const c = await rawConnect(gw.socketPath as string);
      expect(await c.ask(`CREATE conf/one ${kek.uri}`)).toBe('OK 1');
      const dek = ok(await c.ask('GET conf/one'));
      expect(ok(await c.ask('GET conf/one'))).toBe(dek);
      expect(gw.adapterCalls).toEqual([{ op: h.generates ? 'generate' : 'wrap', kek: kek.uri }]);
      c.close();
      await gw.close();

      const gw2 = await gateway(dir);
      const c2 = await rawConnect(gw2.socketPath as string);
      expect(ok(await c2.ask('GET conf/one'))).toBe(dek);
      expect(ok(await c2.ask('GET conf/one'))).toBe(dek);
      expect(gw2.adapterCalls).toEqual([{ op: 'unwrap', kek: kek.uri }]);
      const info = JSON.parse(ok(await c2.ask('INFO conf/one'))) as KeyInfo;
      expect(info.versions[0]?.keks.map((k) => k.kek)).toEqual([kek.uri]);
      expect(info.versions[0]?.keks[0]?.kekVersion).toBe(kek.kekVersion);
      expect(info.versions[0]?.keks[0]?.lastUnwrap?.result).toBe('ok');
      c2.close();
    });

    it('a blob moved to another key id is refused; the key it came from still serves its DEK', async () => {
      const kek = await h.target.newKek();
      const dir = await tmp();
      const gw = await gateway(dir);
      const cl = await createClient({ socketPath: gw.socketPath as string });
      await cl.create('conf/a', kek.uri);
      await cl.create('conf/b', kek.uri);
      const dekB = await cl.get('conf/b');
      await cl.close();
      await gw.close();
      const file = (id: string) => join(dir, 'data', 'keys', fileNameFor(id));
      const read = async (id: string) => JSON.parse(await readFile(file(id), 'utf8')) as KeyRecord;
      const [a, b] = [await read('conf/a'), await read('conf/b')];
      (a.versions[0] as VersionRecord).wraps = (b.versions[0] as VersionRecord).wraps;
      await writeFile(file('conf/a'), JSON.stringify(a));
      const c = await rawConnect((await gateway(dir)).socketPath as string);
      expect(await c.ask('GET conf/a')).toBe(h.movedBlobReply);
      expect(ok(await c.ask('GET conf/b'))).toBe(dekB.toString('base64'));
      c.close();
    });

    when(h.rotate)?.it('rotation in the provider: old blobs stay readable, new DEK versions use the new KEK version', async () => {
      const kek = await h.target.newKek();
      const gw = await gateway(await tmp());
      const cl = await createClient({ socketPath: gw.socketPath as string });
      await cl.create('conf/rot', kek.uri);
      const v1 = await cl.get('conf/rot');
      const env = await cl.enc('conf/rot', Buffer.from('before the KEK rotated'));
      const rotated = await h.rotate?.(kek);
      expect(await cl.rotate('conf/rot')).toBe(2);
      const v2 = await cl.get('conf/rot');
      gw.cache.clear();
      expect((await cl.get('conf/rot@1')).equals(v1)).toBe(true);
      expect((await cl.get('conf/rot@2')).equals(v2)).toBe(true);
      expect((await cl.dec('conf/rot', env)).toString()).toBe('before the KEK rotated');
      const info = (await cl.info('conf/rot')) as KeyInfo;
      expect(info.versions.map((v) => v.keks[0]?.kekVersion)).toEqual([kek.kekVersion, rotated]);
      await cl.close();
    });

    when(h.disable)?.it(
      'a disabled KEK: the first denial zeroizes every DEK cached under it (no TTL wait), the canary sees it with no traffic, enabling needs no restart',
      async () => {
        const disable = h.disable as NonNullable<ConformanceHarness['disable']>;
        const kek = await h.target.newKek();
        const clock = manualClock();
        const gw = await gateway(await tmp(), { clock });
        const c = await rawConnect(gw.socketPath as string);
        expect(await c.ask(`CREATE warm/key ${kek.uri}`)).toBe('OK 1');
        expect(await c.ask(`CREATE cold/key ${kek.uri}`)).toBe('OK 1');
        gw.cache.evict('cold/key', 1);
        await disable.off(kek);
        // A request reaching the KMS learns of the denial; warm/key is refused at once, not at its TTL.
        expect(await c.ask('GET cold/key')).toBe(disable.reply);
        expect(gw.health.denied(kek.uri)).toBe(true);
        expect(gw.cache.peek('warm/key', 1)).toBeUndefined();
        expect(await c.ask('GET warm/key')).toBe(disable.reply);
        await disable.on(kek);
        expect(await c.ask('GET warm/key')).toMatch(/^OK /);
        expect(await c.ask('GET cold/key')).toMatch(/^OK /);
        expect(gw.health.status(kek.uri).state).toBe('ok');

        // No traffic at all: one canary round (what kms.canaryIntervalMs runs) finds the denial.
        await disable.off(kek);
        expect(gw.cache.peek('warm/key', 1)).toBeDefined();
        await gw.canary.runOnce();
        expect(gw.health.status(kek.uri)).toMatchObject({ state: 'denied', code: 'KMS_DENIED' });
        expect(gw.cache.peek('warm/key', 1)).toBeUndefined();
        expect(gw.cache.peek('cold/key', 1)).toBeUndefined();
        const down = gw.readiness();
        expect(down.ready).toBe(false);
        expect(down.keks).toContainEqual(expect.objectContaining({ kek: kek.uri, state: 'denied' }));
        clock.advance(1_000);
        await disable.on(kek);
        await gw.canary.runOnce();
        expect(gw.health.status(kek.uri).state).toBe('ok');
        expect(gw.readiness().ready).toBe(true);
        expect(await c.ask('GET warm/key')).toMatch(/^OK /);
        c.close();
      },
    );

    it('ENC/DEC through a wrapped DEK; versions under two KEKs both decrypt; a wrong or missing AAD is refused', async () => {
      const [k1, k2] = [await h.target.newKek(), await h.target.newKek()];
      const gw = await gateway(await tmp());
      const c = await rawConnect(gw.socketPath as string);
      expect(await c.ask(`CREATE col/email ${k1.uri}`)).toBe('OK 1');
      const e1 = ok(await c.ask(`ENC col/email ${b64('alice@example.com')} ${b64('users:1')}`));
      expect(await c.ask(`ROTATE col/email ${k2.uri}`)).toBe('OK 2');
      const e2 = ok(await c.ask(`ENC col/email ${b64('bob@example.com')} ${b64('users:2')}`));
      gw.cache.clear();
      expect(await c.ask(`DEC col/email ${e1} ${b64('users:1')}`)).toBe(`OK ${b64('alice@example.com')}`);
      expect(await c.ask(`DEC col/email ${e2} ${b64('users:2')}`)).toBe(`OK ${b64('bob@example.com')}`);
      expect(await c.ask(`DEC col/email ${e2} ${b64('users:1')}`)).toMatch(/^ERR DECRYPT_FAILED /);
      expect(await c.ask(`DEC col/email ${e1}`)).toMatch(/^ERR DECRYPT_FAILED /);
      const info = JSON.parse(ok(await c.ask('INFO col/email'))) as KeyInfo;
      expect(info.versions.map((v) => v.keks[0]?.kek)).toEqual([k1.uri, k2.uri]);
      c.close();
    });

    when(h.outage)?.describe('outage (a KMS of its own, stopped mid-test)', () => {
      const outage = h.outage as NonNullable<ConformanceHarness['outage']>;
      let own: StoppableTarget | undefined;
      beforeAll(async () => {
        own = await outage.open();
      }, 180_000);
      afterAll(() => own?.dispose());

      it('a stopped KMS gives KMS_UNAVAILABLE within the deadline; cached keys keep working; it recovers without a restart', async () => {
        const target = own as StoppableTarget;
        const kek = await target.newKek();
        const gw = await gateway(await tmp(), { target, timeoutMs: outage.timeoutMs });
        const c = await rawConnect(gw.socketPath as string);
        expect(await c.ask(`CREATE out/warm ${kek.uri}`)).toBe('OK 1');
        expect(await c.ask(`CREATE out/cold ${kek.uri}`)).toBe('OK 1');
        const cold = ok(await c.ask('GET out/cold'));
        gw.cache.evict('out/cold', 1);
        await target.stop();
        const started = performance.now();
        expect(await c.ask('GET out/cold')).toMatch(outage.reply);
        expect(performance.now() - started).toBeLessThan(outage.timeoutMs + 1000);
        expect(await c.ask('GET out/warm')).toMatch(/^OK /);
        await target.start();
        expect(ok(await c.ask('GET out/cold'))).toBe(cold);
        c.close();
      }, 180_000);
    });
  });
}
