// Over 300 lines because one file runs every multi-KEK scenario against the same set of real KMSs
// (two LocalStacks, the Cloud KMS and Key Vault emulators), which share the site set-up below.
//
// Keys wrapped under several KEKs, against real emulators (no mocked SDK): AWS us-east-1 (the shared
// LocalStack) + AWS eu-west-1 (a second LocalStack), routed by kms.adapters.aws-kms.endpoints; AWS + GCP;
// AWS + Azure. Every KMS is reached through a TCP relay of its own (test/helpers/tcp-proxy.ts), which
// can refuse connections (nothing listening) or black-hole them (accepted, never answered), so one
// KMS can be taken away without touching the others. Measured: how long a cold GET/DEC takes when
// the preferred KEK's KMS is gone (printed, bounded by hedgeMs + one call).
import { randomBytes } from 'node:crypto';
import { DescribeKeyCommand, DisableKeyCommand, EnableKeyCommand, ScheduleKeyDeletionCommand } from '@aws-sdk/client-kms';
import type { KeyManagementServiceClient } from '@google-cloud/kms';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { azureModule } from '../../adapters/azure/index.js';
import gcp from '../../adapters/gcp/index.js';
import { DEFAULT_LOADERS } from '../../adapters/registry.js';
import type { ConfigInput } from '../../src/config/schema.js';
import type { KeyInfo, KekInfo } from '../../src/keys/versions.js';
import { fakeCredential, keyClient } from '../helpers/azure-kv.js';
import { fakeLoader } from '../helpers/fake-adapter.js';
import {
  b64,
  okPayload as ok,
  rawConnect,
  startTestGateway,
  useRunningGateways,
  type RawConn,
  type TestGateway,
} from '../helpers/gateway.js';
import { adminClient, createKey } from '../helpers/gcp-kms.js';
import { createKek, startLocalStack, type LocalStackInstance } from '../helpers/localstack.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { kmsClient } from '../setup/localstack.js';

// LocalStack accepts any credentials; the gateway reads them through the SDK's default chain.
process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';
process.env['METADATA_SERVER_DETECTION'] = 'none';

const sharedLs = inject('localstack');
const sharedGcp = inject('gcpKms');
const sharedAz = inject('azureKv');
const tmp = useTmpDirs();
const running = useRunningGateways();

/** kms.hedgeMs: how long the preferred KEK may take before the next one is also asked (the shipped default). */
const HEDGE_MS = 250;
/** kms.timeoutMs: the deadline of one KMS call, retries included (the shipped default). */
const TIMEOUT_MS = 2000;
/**
 * A generous bound on one unwrap by a KMS that answers: a few ms on these emulators when idle, but
 * the machine may be busy (two cores, other suites, the lead's LocalStack), and the first call on a
 * relay's fresh connection may pay for a TCP (and, for Key Vault, TLS) handshake. HEDGE_MS +
 * ONE_CALL_MS stays below TIMEOUT_MS, so a bound met proves the other KEK answered, not the stopped
 * one's deadline.
 */
const ONE_CALL_MS = 1500;

type Kind = 'aws-us' | 'aws-eu' | 'gcp' | 'azure';
const LABEL: Record<Kind, string> = { 'aws-us': 'AWS us-east-1', 'aws-eu': 'AWS eu-west-1', gcp: 'GCP', azure: 'Azure' };
/** The pairs of the issue: two AWS regions (two LocalStacks), AWS + GCP, AWS + Azure. */
const PAIRS: ReadonlyArray<readonly [Kind, Kind]> = [
  ['aws-us', 'aws-eu'],
  ['aws-us', 'gcp'],
  ['aws-us', 'azure'],
];

/** A KEK as the gateway names it (through its site's relay) and what INFO should show as its provider version. */
interface Kek {
  readonly uri: string;
  readonly kekVersion: string;
  readonly site: Site;
}

/** One KMS reached through a relay of its own (fresh per test, so no SDK client or channel is shared between tests). */
interface Site {
  readonly kind: Kind;
  readonly label: string;
  readonly relay: TcpProxy;
  /** `kms.adapters` entries to reach it (AWS sites add their region to `aws-kms.endpoints`). */
  readonly adapters: Record<string, Record<string, unknown>>;
  newKek(): Promise<Kek>;
  disable(kek: Kek): Promise<void>;
  enable(kek: Kek): Promise<void>;
}

let europe: LocalStackInstance;
let gcpAdmin: KeyManagementServiceClient;
const azKeys = keyClient(sharedAz.vaultUrl, sharedAz.caCertPath);
const relays: TcpProxy[] = [];
const conns: RawConn[] = [];
let seq = 0;

beforeAll(async () => {
  europe = await startLocalStack();
  gcpAdmin = adminClient({ host: '127.0.0.1', port: sharedGcp.port });
}, 60_000);
afterAll(async () => {
  await gcpAdmin?.close();
  await europe?.stop();
});
afterEach(async () => {
  for (const c of conns.splice(0)) c.close();
  // After useRunningGateways' afterEach has closed this test's gateways (hooks run in reverse order).
  await Promise.all(relays.splice(0).map((r) => r.close()));
});

const portOf = (url: string) => Number(new URL(url).port);

async function awsSite(kind: 'aws-us' | 'aws-eu'): Promise<Site> {
  const [endpoint, region] = kind === 'aws-us' ? [sharedLs.endpoint, 'us-east-1'] : [europe.endpoint, 'eu-west-1'];
  const relay = await startTcpProxy(portOf(endpoint));
  relays.push(relay);
  const setEnabled = async (kek: Kek, enabled: boolean) => {
    const sdk = kmsClient(endpoint, region);
    try {
      await sdk.send(enabled ? new EnableKeyCommand({ KeyId: kek.kekVersion }) : new DisableKeyCommand({ KeyId: kek.kekVersion }));
    } finally {
      sdk.destroy();
    }
  };
  const site: Site = {
    kind,
    label: LABEL[kind],
    relay,
    adapters: { 'aws-kms': { endpoints: { [region]: `http://127.0.0.1:${relay.port}` } } },
    newKek: async () => {
      const arn = await createKek(endpoint, { region });
      expect(arn).toContain(`:${region}:`);
      return { uri: `aws-kms://${arn}`, kekVersion: arn, site };
    },
    disable: (kek) => setEnabled(kek, false),
    enable: (kek) => setEnabled(kek, true),
  };
  return site;
}

async function gcpSite(): Promise<Site> {
  const relay = await startTcpProxy(sharedGcp.port);
  relays.push(relay);
  const setState = async (kek: Kek, state: 'ENABLED' | 'DISABLED') =>
    void (await gcpAdmin.updateCryptoKeyVersion({ cryptoKeyVersion: { name: kek.kekVersion, state }, updateMask: { paths: ['state'] } }));
  const site: Site = {
    kind: 'gcp',
    label: LABEL.gcp,
    relay,
    adapters: { 'gcp-kms': { endpoint: `127.0.0.1:${relay.port}`, tls: false } },
    newKek: async () => {
      const name = await createKey(gcpAdmin, { keyRing: 'multi-kek', key: `k${Date.now()}-${seq++}` });
      return { uri: `gcp-kms://${name}`, kekVersion: `${name}/cryptoKeyVersions/1`, site };
    },
    disable: (kek) => setState(kek, 'DISABLED'),
    enable: (kek) => setState(kek, 'ENABLED'),
  };
  return site;
}

async function azureSite(): Promise<Site> {
  const relay = await startTcpProxy(portOf(sharedAz.vaultUrl));
  relays.push(relay);
  // The vault as the adapter sees it: the relay (the emulator's certificate covers localhost, any port).
  const host = `localhost:${relay.port}`;
  const setEnabled = async (kek: Kek, enabled: boolean) => {
    const [name, version] = kek.kekVersion.split('/').slice(-2) as [string, string];
    await azKeys.updateKeyProperties(name, version, { enabled });
  };
  const site: Site = {
    kind: 'azure',
    label: LABEL.azure,
    relay,
    adapters: { 'azure-kv': { caFile: sharedAz.caCertPath } },
    newKek: async () => {
      const name = `mk-${Date.now()}-${seq++}`;
      const key = await azKeys.createRsaKey(name, { keySize: 2048 });
      return {
        uri: `azure-kv://${host}/keys/${name}`,
        kekVersion: (key.id as string).replace(new URL(sharedAz.vaultUrl).host, host),
        site,
      };
    },
    disable: (kek) => setEnabled(kek, false),
    enable: (kek) => setEnabled(kek, true),
  };
  return site;
}

const openSite = (kind: Kind): Promise<Site> => (kind === 'gcp' ? gcpSite() : kind === 'azure' ? azureSite() : awsSite(kind));

/** `kms.adapters` reaching every site (the AWS regions merged into one endpoint map). */
function adaptersFor(sites: readonly Site[]): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (const s of sites) {
    for (const [scheme, settings] of Object.entries(s.adapters)) {
      const before = out[scheme] ?? {};
      const endpoints = { ...(before['endpoints'] as object | undefined), ...(settings['endpoints'] as object | undefined) };
      out[scheme] = { ...before, ...settings, ...(Object.keys(endpoints).length > 0 ? { endpoints } : {}) };
    }
  }
  return out;
}

const loaders = {
  ...DEFAULT_LOADERS,
  fake: fakeLoader,
  'gcp-kms': async () => gcp,
  // The adapter with a fake token credential; challenge-resource checks off (test vault only).
  'azure-kv': async () => azureModule({ credential: fakeCredential, clientOptions: { disableChallengeResourceVerification: true } }),
};

/** A gateway reaching `sites`, keys created by CREATE only, with `kms` on top of the shipped hedge and deadline. */
async function gateway(sites: readonly Site[], kms: ConfigInput['kms'] = {}, dir?: string): Promise<TestGateway> {
  const gw = await startTestGateway(
    dir ?? (await tmp()),
    { keys: { autoCreate: false }, kms: { timeoutMs: TIMEOUT_MS, hedgeMs: HEDGE_MS, ...kms, adapters: adaptersFor(sites) } },
    { loaders },
  );
  running.push(gw);
  return gw;
}

async function connect(gw: TestGateway): Promise<RawConn> {
  const c = await rawConnect(gw.socketPath as string);
  conns.push(c);
  return c;
}

async function info(c: RawConn, id: string): Promise<KeyInfo> {
  return JSON.parse(ok(await c.ask(`INFO ${id}`))) as KeyInfo;
}

/** INFO's entry for `kek` in version `version` of `id`. */
async function kekInfo(c: RawConn, id: string, version: number, kek: Kek): Promise<KekInfo> {
  const v = (await info(c, id)).versions.find((x) => x.version === version);
  const found = v?.keks.find((k) => k.kek === kek.uri);
  expect(found, `INFO ${id} v${version} lists ${kek.uri}`).toBeDefined();
  return found as KekInfo;
}

/** Whether INFO says `kek` unwrapped version `version` of `id` successfully at or after `since` (Date.now()). */
async function unwrappedSince(c: RawConn, id: string, version: number, kek: Kek, since: number): Promise<boolean> {
  const last = (await kekInfo(c, id, version, kek)).lastUnwrap;
  return last !== null && last.result === 'ok' && Date.parse(last.at) >= since;
}

/** Runs one request and returns its reply with its latency in ms. */
async function timed(c: RawConn, line: string): Promise<[string, number]> {
  const t0 = performance.now();
  const reply = await c.ask(line);
  return [reply, performance.now() - t0];
}

const ms = (x: number) => `${x.toFixed(0)} ms`;
const DENIED = /^ERR KMS_DENIED /;

describe('one DEK under several KEKs, against real emulators', () => {
  // 1 + 2 + 6. The preferred KEK's KMS taken away: cold GET and DEC are served by the other KEK.
  for (const pair of PAIRS) {
    for (const stoppedIndex of [0, 1]) {
      const stoppedKind = pair[stoppedIndex] as Kind;
      const otherKind = pair[1 - stoppedIndex] as Kind;
      it(`${LABEL[pair[0]]} + ${LABEL[pair[1]]}: ${LABEL[stoppedKind]} (preferred) black-holed, then refusing, with a cold cache: GET and DEC served by ${LABEL[otherKind]} within hedgeMs + one call`, async () => {
        const sites = await Promise.all(pair.map(openSite));
        const keks = await Promise.all(sites.map((s) => s.newKek()));
        const stopped = keks[stoppedIndex] as Kek;
        const other = keks[1 - stoppedIndex] as Kek;
        // The stopped KEK is the preferred one: else nothing would fail over.
        const gw = await gateway(sites, { preference: [stopped.uri] });
        const c = await connect(gw);
        expect(await c.ask(`CREATE mk/fo ${keks.map((k) => k.uri).join(',')}`)).toBe('OK 1');
        const plaintext = b64(`multi-kek data ${randomBytes(8).toString('hex')}`);
        const envelope = ok(await c.ask(`ENC mk/fo ${plaintext}`));
        gw.cache.clear();
        const since = Date.now();
        const dek = ok(await c.ask('GET mk/fo'));
        // Each KEK's KMS was reached through its own relay (for AWS: the endpoint of its region).
        for (const s of sites) expect(s.relay.accepted, `${s.label} reached through its relay`).toBeGreaterThan(0);

        // 6. INFO: per version each KEK, its provider key version, its last unwrap; the preferred KEK answered.
        const v1 = (await info(c, 'mk/fo')).versions[0];
        expect(v1?.keks.map((k) => k.kek)).toEqual(keks.map((k) => k.uri));
        for (const k of keks) expect((await kekInfo(c, 'mk/fo', 1, k)).kekVersion).toBe(k.kekVersion);
        expect(await unwrappedSince(c, 'mk/fo', 1, stopped, since)).toBe(true);
        expect((await kekInfo(c, 'mk/fo', 1, stopped)).kekState).toBe('ok');

        const measured: Record<string, { get: number; dec: number }> = {};
        // Black hole first: a refusal would leave a gRPC channel in reconnect backoff, failing calls at
        // once, and the black hole would then not be measured as one.
        for (const mode of ['black-hole', 'refuse'] as const) {
          await (mode === 'black-hole' ? stopped.site.relay.blackhole() : stopped.site.relay.refuse());
          gw.cache.clear();
          const t0 = Date.now();
          const [got, getMs] = await timed(c, 'GET mk/fo');
          expect(got).toBe(`OK ${dek}`);
          gw.cache.clear();
          const [dec, decMs] = await timed(c, `DEC mk/fo ${envelope}`);
          expect(dec).toBe(`OK ${plaintext}`);
          measured[mode] = { get: getMs, dec: decMs };
          // The other KEK answered (twice), the stopped one did not.
          expect(await unwrappedSince(c, 'mk/fo', 1, other, t0)).toBe(true);
          expect(await unwrappedSince(c, 'mk/fo', 1, stopped, t0)).toBe(false);
          // (Its call was cancelled when the other KEK won, which INFO does not count as an unwrap, unless it
          // failed first: a refused AWS or Azure call can, within hedgeMs; a refused GCP call waits up to
          // 250 ms per attempt for its channel to connect, and the hedge comes first.)
          await stopped.site.relay.accept();
        }
        const bh = measured['black-hole'] as { get: number; dec: number };
        const rf = measured['refuse'] as { get: number; dec: number };
        console.log(
          `[multi-kek] ${LABEL[stoppedKind].padEnd(13)} stopped → ${LABEL[otherKind].padEnd(13)} | black-hole GET ${ms(bh.get)} DEC ${ms(bh.dec)} | refuse GET ${ms(rf.get)} DEC ${ms(rf.dec)} | hedgeMs ${HEDGE_MS}, timeoutMs ${TIMEOUT_MS}`,
        );
        // A black-holed KMS never answers: the other KEK is asked when hedgeMs has passed, and answers within one call.
        expect(Math.max(bh.get, bh.dec)).toBeLessThan(HEDGE_MS + ONE_CALL_MS);
        // A refused connection fails at once (after kms.retry's short backoffs), or hedgeMs hands over
        // first: either way far from the deadline a dead KMS would cost without failover.
        expect(Math.max(rf.get, rf.dec)).toBeLessThan(TIMEOUT_MS / 2);
      });
    }
  }

  // 3. Both KMSs of a key down: KMS_UNAVAILABLE within the deadline (+ the hedge), the connection still serves after.
  for (const pair of PAIRS) {
    it(`${LABEL[pair[0]]} + ${LABEL[pair[1]]}: both black-holed, then both refusing: ERR KMS_UNAVAILABLE within kms.timeoutMs + hedgeMs, and the connection serves again once they are back`, async () => {
      const sites = await Promise.all(pair.map(openSite));
      const keks = await Promise.all(sites.map((s) => s.newKek()));
      const gw = await gateway(sites, { preference: [(keks[0] as Kek).uri] });
      const c = await connect(gw);
      expect(await c.ask(`CREATE mk/down ${keks.map((k) => k.uri).join(',')}`)).toBe('OK 1');
      const plaintext = b64('both down');
      const envelope = ok(await c.ask(`ENC mk/down ${plaintext}`));
      const dek = ok(await c.ask('GET mk/down'));
      const measured: Record<string, number> = {};
      for (const mode of ['black-hole', 'refuse'] as const) {
        await Promise.all(sites.map((s) => (mode === 'black-hole' ? s.relay.blackhole() : s.relay.refuse())));
        gw.cache.clear();
        const t0 = Date.now();
        const [reply, took] = await timed(c, 'GET mk/down');
        expect(reply).toMatch(/^ERR KMS_UNAVAILABLE none of the 2 KEKs of this key version could unwrap it/);
        measured[mode] = took;
        // INFO: each KEK's last unwrap failed as an outage, now.
        for (const k of keks) {
          const last = (await kekInfo(c, 'mk/down', 1, k)).lastUnwrap;
          expect(last?.result).toBe('KMS_UNAVAILABLE');
          expect(Date.parse(last?.at as string)).toBeGreaterThanOrEqual(t0);
        }
        // The same connection, still down: the next request is answered too (refusing only: black-holed it
        // would cost another deadline).
        if (mode === 'refuse') expect(await c.ask(`DEC mk/down ${envelope}`)).toMatch(/^ERR KMS_UNAVAILABLE /);
        await Promise.all(sites.map((s) => s.relay.accept()));
        gw.cache.clear();
        expect(await c.ask('GET mk/down')).toBe(`OK ${dek}`);
        expect(await c.ask(`DEC mk/down ${envelope}`)).toBe(`OK ${plaintext}`);
      }
      console.log(
        `[multi-kek] ${`${LABEL[pair[0]]} + ${LABEL[pair[1]]}`.padEnd(29)} both down | black-hole ERR after ${ms(measured['black-hole'] as number)} | refuse ERR after ${ms(measured['refuse'] as number)} | hedgeMs ${HEDGE_MS}, timeoutMs ${TIMEOUT_MS}`,
      );
      // Black-holed, the second KEK is asked hedgeMs after the first and hits its own deadline then: the
      // error comes at about timeoutMs + hedgeMs; 1 s margin for a busy machine.
      expect(measured['black-hole']).toBeLessThan(TIMEOUT_MS + HEDGE_MS + 1000);
      expect(measured['refuse']).toBeLessThan(TIMEOUT_MS);
    });
  }

  // 4. One KEK disabled in its KMS: kms.revocation 'any' and 'all'; re-enabled, or removed from the version.
  for (const pair of PAIRS) {
    const [keptKind, disabledKind] = pair;
    it(`${LABEL[keptKind]} + ${LABEL[disabledKind]}: ${LABEL[disabledKind]} disabled — 'any' refuses the version once a call sees the denial, 'all' serves it by ${LABEL[keptKind]}; re-enabled, or REMOVEKEK'd, it is served again`, async () => {
      const sites = await Promise.all(pair.map(openSite));
      const [kept, disabled] = (await Promise.all(sites.map((s) => s.newKek()))) as [Kek, Kek];
      const dir = await tmp();
      const keks = `${kept.uri},${disabled.uri}`;
      let gw = await gateway(sites, {}, dir);
      let c = await connect(gw);
      expect(await c.ask(`CREATE mk/r1 ${keks}`)).toBe('OK 1');
      expect(await c.ask(`CREATE mk/r2 ${keks}`)).toBe('OK 1');
      const plaintext = b64('revocation');
      const envelope = ok(await c.ask(`ENC mk/r1 ${plaintext}`));
      const dek1 = ok(await c.ask('GET mk/r1'));
      const dek2 = ok(await c.ask('GET mk/r2'));
      await gw.close();
      await disabled.site.disable(disabled);

      // 'any', the disabled KEK not preferred: no call has seen the denial yet, so the kept KEK serves...
      gw = await gateway(sites, { revocation: 'any', preference: [kept.uri] }, dir);
      c = await connect(gw);
      expect(await c.ask('GET mk/r1')).toBe(`OK ${dek1}`);
      // ...until one does (here the canary; kms.canaryIntervalMs bounds it): then the version is refused.
      await gw.canary.runOnce();
      expect(gw.health.status(disabled.uri)).toMatchObject({ state: 'denied', code: 'KMS_DENIED' });
      expect(await c.ask('GET mk/r1')).toMatch(DENIED);
      expect(await c.ask(`DEC mk/r1 ${envelope}`)).toMatch(DENIED);
      await gw.close();

      // 'any', the disabled KEK preferred, cold cache: the first call sees the denial and refuses.
      gw = await gateway(sites, { revocation: 'any', preference: [disabled.uri] }, dir);
      c = await connect(gw);
      expect(await c.ask('GET mk/r1')).toMatch(DENIED);
      expect(await c.ask(`DEC mk/r1 ${envelope}`)).toMatch(DENIED);
      expect(await c.ask('GET mk/r2')).toMatch(DENIED);
      const seen = await kekInfo(c, 'mk/r1', 1, disabled);
      expect(seen.lastUnwrap?.result).toBe('KMS_DENIED');
      expect(seen.kekState).toBe('denied');
      expect((await kekInfo(c, 'mk/r1', 1, kept)).lastUnwrap).toBeNull();
      await gw.close();

      // 'all': served while any KEK unwraps — by the kept one, after the preferred one's denial.
      gw = await gateway(sites, { revocation: 'all', preference: [disabled.uri] }, dir);
      c = await connect(gw);
      let since = Date.now();
      expect(await c.ask('GET mk/r1')).toBe(`OK ${dek1}`);
      gw.cache.clear();
      expect(await c.ask(`DEC mk/r1 ${envelope}`)).toBe(`OK ${plaintext}`);
      expect(await unwrappedSince(c, 'mk/r1', 1, kept, since)).toBe(true);
      expect((await kekInfo(c, 'mk/r1', 1, disabled)).lastUnwrap?.result).toBe('KMS_DENIED');
      await gw.close();

      // 'any' again: REMOVEKEK of the denied KEK lets mk/r2 be served without re-enabling it (no KMS call).
      gw = await gateway(sites, { revocation: 'any', preference: [disabled.uri] }, dir);
      c = await connect(gw);
      expect(await c.ask('GET mk/r1')).toMatch(DENIED);
      expect(await c.ask('GET mk/r2')).toMatch(DENIED);
      expect(await c.ask(`REMOVEKEK mk/r2 ${disabled.uri} ALL`)).toBe('OK 1');
      expect((await info(c, 'mk/r2')).versions[0]?.keks.map((k) => k.kek)).toEqual([kept.uri]);
      expect(await c.ask('GET mk/r2')).toBe(`OK ${dek2}`);
      // Still refused where the denied KEK stays.
      expect(await c.ask('GET mk/r1')).toMatch(DENIED);

      // Re-enabled: the denied KEK unwraps again, and the version is served again under 'any'.
      await disabled.site.enable(disabled);
      gw.cache.clear();
      since = Date.now();
      expect(await c.ask('GET mk/r1')).toBe(`OK ${dek1}`);
      expect(await unwrappedSince(c, 'mk/r1', 1, disabled, since)).toBe(true);
      expect((await kekInfo(c, 'mk/r1', 1, disabled)).kekState).toBe('ok');
      gw.cache.clear();
      expect(await c.ask(`DEC mk/r1 ${envelope}`)).toBe(`OK ${plaintext}`);
    });
  }

  // 5. ADDKEK on a key with envelopes, REMOVEKEK of the first KEK, which is then deleted in its KMS.
  for (const [, secondKind] of PAIRS) {
    it(`ADDKEK ${LABEL[secondKind]} ALL, REMOVEKEK AWS us-east-1 ALL, that KEK scheduled for deletion: after a restart every old envelope decrypts and GET of each version gives the same DEK`, async () => {
      const sites = await Promise.all((['aws-us', secondKind] as const).map(openSite));
      const [first, second] = (await Promise.all(sites.map((s) => s.newKek()))) as [Kek, Kek];
      const dir = await tmp();
      const gw = await gateway(sites, {}, dir);
      const c = await connect(gw);
      expect(await c.ask(`CREATE mk/move ${first.uri}`)).toBe('OK 1');
      const data = [b64('under version 1, a'), b64('under version 1, b')];
      const envelopes = [ok(await c.ask(`ENC mk/move ${data[0]}`)), ok(await c.ask(`ENC mk/move ${data[1]}`))];
      expect(await c.ask('ROTATE mk/move')).toBe('OK 2');
      data.push(b64('under version 2'));
      envelopes.push(ok(await c.ask(`ENC mk/move ${data[2]}`)));
      const deks = [ok(await c.ask('GET mk/move@1')), ok(await c.ask('GET mk/move@2'))];

      expect(await c.ask(`ADDKEK mk/move ${second.uri} ALL`)).toBe('OK 2');
      for (const v of (await info(c, 'mk/move')).versions) {
        expect(v.keks.map((k) => [k.kek, k.kekVersion])).toEqual([
          [first.uri, first.kekVersion],
          [second.uri, second.kekVersion],
        ]);
      }
      expect(await c.ask(`REMOVEKEK mk/move ${first.uri} ALL`)).toBe('OK 2');
      for (const v of (await info(c, 'mk/move')).versions) expect(v.keks.map((k) => k.kek)).toEqual([second.uri]);
      await gw.close();

      // The first KEK is gone from its KMS (pending deletion: it decrypts nothing any more).
      const sdk = kmsClient(sharedLs.endpoint, 'us-east-1');
      try {
        await sdk.send(new ScheduleKeyDeletionCommand({ KeyId: first.kekVersion, PendingWindowInDays: 7 }));
        const described = await sdk.send(new DescribeKeyCommand({ KeyId: first.kekVersion }));
        expect(described.KeyMetadata?.KeyState).toBe('PendingDeletion');
      } finally {
        sdk.destroy();
      }

      // A restarted gateway (cold cache) on the same store.
      const gw2 = await gateway(sites, {}, dir);
      const c2 = await connect(gw2);
      for (const [i, envelope] of envelopes.entries()) expect(await c2.ask(`DEC mk/move ${envelope}`)).toBe(`OK ${data[i]}`);
      gw2.cache.clear();
      expect(await c2.ask('GET mk/move@1')).toBe(`OK ${deks[0]}`);
      expect(await c2.ask('GET mk/move@2')).toBe(`OK ${deks[1]}`);
      expect(gw2.adapterCalls.filter((call) => call.kek === first.uri)).toEqual([]);
      for (const v of [1, 2]) expect((await kekInfo(c2, 'mk/move', v, second)).lastUnwrap?.result).toBe('ok');
    });
  }
});
