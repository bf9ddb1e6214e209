// The one conformance suite every KEK adapter runs, against its real KMS (LocalStack or an
// in-repo emulator): the KeyWrapper contract here, then the same adapter behind a real gateway
// (conformance-gateway.ts). A cloud's test file builds a harness (how to make KEKs, what its
// KMS can do) and keeps only the tests about that cloud alone.
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { AdapterSettingsSchema } from '../../adapters/settings.js';
import type { AdapterModule, KeyWrapper } from '../../adapters/types.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';
import { describeThroughGateway, when } from './conformance-gateway.js';

export { startHarnessGateway } from './conformance-gateway.js';

/** A KEK made for one test. */
export interface Kek {
  readonly uri: string;
  /** The kekVersion the adapter reports for a DEK wrapped now (AWS: the key ARN); undefined when it reports none. */
  readonly kekVersion?: string;
}

/** A KMS the adapter can reach. */
export interface KmsTarget {
  /** `kms.adapters`, as in the config file, for reaching it. */
  readonly adapters: Record<string, unknown>;
  newKek(): Promise<Kek>;
}

/** A KMS of the test's own, which it may stop. */
export interface StoppableTarget extends KmsTarget {
  stop(): Promise<void>;
  /** Back on the same port, with the KEKs made before usable again. */
  start(): Promise<void>;
  dispose(): Promise<void>;
}

export interface ConformanceHarness {
  /** The KEK URI scheme; the gateway loads `module` for it. */
  readonly scheme: string;
  readonly module: AdapterModule;
  /** The KMS shared by the test run. */
  readonly target: KmsTarget;
  /** New DEKs come from the KMS (`generate`), so CREATE's one adapter call is `generate`. */
  readonly generates: boolean;
  /** The KMS binds a blob to key id and version (AAD, EncryptionContext); else only the gateway's commitment tag does. */
  readonly bindsContext: boolean;
  /** GET's reply when a key's blob was replaced by another key's. */
  readonly movedBlobReply: string;
  /** Optional: disable and enable a KEK in the provider; `reply` is a cold GET's answer meanwhile. */
  readonly disable?: { off(kek: Kek): Promise<void>; on(kek: Kek): Promise<void>; readonly reply: string };
  /** Optional: rotate a KEK in the provider; resolves to the kekVersion new wraps then report. */
  readonly rotate?: (kek: Kek) => Promise<string | undefined>;
  /** Optional: a KMS of its own to stop mid-test, the gateway deadline to use, and a cold GET's reply meanwhile. */
  readonly outage?: { open(): Promise<StoppableTarget>; readonly timeoutMs: number; readonly reply: RegExp };
  /** Optional: the shared KMS reached through a TCP relay on 127.0.0.1:`port`, to watch the client's connections. */
  readonly relay?: { readonly upstreamPort: number; via(port: number): KmsTarget };
}

const ctx = (keyId: string, version = 1) => ({ keyId, version, signal: new AbortController().signal });

/** The whole suite: the KeyWrapper contract, then the adapter behind a real gateway. */
export function describeKeyWrapperConformance(name: string, h: ConformanceHarness): void {
  describeWrapperContract(name, h);
  describeThroughGateway(name, h);
}

function describeWrapperContract(name: string, h: ConformanceHarness): void {
  describe(`${name}: KeyWrapper contract`, () => {
    const made: KeyWrapper[] = [];
    afterEach(async () => {
      await Promise.all(made.splice(0).map((w) => w.close()));
    });
    const wrapper = (kek: Kek, target = h.target) => {
      const settings = AdapterSettingsSchema.parse(target.adapters);
      const w = h.module.createWrapper(kek.uri, { dataDir: '/nonexistent', settings, timeoutMs: 5000 });
      made.push(w);
      return w;
    };

    it('wraps and unwraps a 32-byte DEK, leaves the input alone, reports the KEK version, never repeats a blob', async () => {
      const kek = await h.target.newKek();
      const w = wrapper(kek);
      const dek = randomBytes(32);
      const copy = Buffer.from(dek);
      const wrapped = await w.wrap(dek, ctx('conf/a'));
      expect(dek.equals(copy)).toBe(true);
      expect(wrapped.blob.length).toBeGreaterThan(0);
      expect(wrapped.blob.includes(dek)).toBe(false);
      expect(wrapped.kekVersion).toBe(kek.kekVersion);
      expect((await w.unwrap(wrapped, ctx('conf/a'))).equals(dek)).toBe(true);
      expect((await w.wrap(dek, ctx('conf/a'))).blob.equals(wrapped.blob)).toBe(false);
    });

    it(
      h.bindsContext
        ? 'binds the blob to key id and version: another context does not unwrap'
        : 'does not bind key id and version (the gateway commitment tag must catch a moved blob)',
      async () => {
        const w = wrapper(await h.target.newKek());
        const dek = randomBytes(32);
        const wrapped = await w.wrap(dek, ctx('conf/a', 1));
        for (const other of [ctx('conf/b', 1), ctx('conf/a', 2)]) {
          if (h.bindsContext) await expect(w.unwrap(wrapped, other)).rejects.toMatchObject({ code: 'DECRYPT_FAILED' });
          else expect((await w.unwrap(wrapped, other)).equals(dek)).toBe(true);
        }
      },
    );

    it('refuses a blob wrapped under another KEK', async () => {
      const [w1, w2] = [wrapper(await h.target.newKek()), wrapper(await h.target.newKek())];
      const wrapped = await w1.wrap(randomBytes(32), ctx('conf/a'));
      await expect(w2.unwrap(wrapped, ctx('conf/a'))).rejects.toMatchObject({ code: 'DECRYPT_FAILED' });
      await expect(w2.unwrap({ blob: wrapped.blob }, ctx('conf/a'))).rejects.toMatchObject({ code: 'DECRYPT_FAILED' });
    });

    it(h.generates ? 'generate() gives 32 bytes from the KMS that unwrap to the same DEK' : 'has no generate()', async () => {
      const w = wrapper(await h.target.newKek());
      expect(typeof w.generate).toBe(h.generates ? 'function' : 'undefined');
      if (!w.generate) return;
      const { dek, ...wrapped } = await w.generate(ctx('conf/g'));
      expect(dek).toHaveLength(32);
      expect((await w.unwrap(wrapped, ctx('conf/g'))).equals(dek)).toBe(true);
    });

    it('close() is idempotent and does not break another wrapper of the same KMS', async () => {
      const kek = await h.target.newKek();
      const [a, b] = [wrapper(kek), wrapper(kek)];
      const wrapped = await a.wrap(randomBytes(32), ctx('conf/c'));
      await a.close();
      await a.close();
      await expect(b.unwrap(wrapped, ctx('conf/c'))).resolves.toHaveLength(32);
    });

    when(h.relay)?.it('wrappers share one client; the last close() closes its connections; a closed wrapper refuses calls', async () => {
      const relay = h.relay as NonNullable<ConformanceHarness['relay']>;
      const proxy = await startTcpProxy(relay.upstreamPort);
      try {
        const target = relay.via(proxy.port);
        const kek = await target.newKek();
        const [a, b] = [wrapper(kek, target), wrapper(kek, target)];
        const wrapped = await a.wrap(randomBytes(32), ctx('conf/c'));
        await b.unwrap(wrapped, ctx('conf/c'));
        expect(proxy.accepted).toBe(1);
        await a.close();
        await b.unwrap(wrapped, ctx('conf/c'));
        expect(proxy.open).toBe(1);
        await b.close();
        await proxy.drained();
        await expect(b.unwrap(wrapped, ctx('conf/c'))).rejects.toMatchObject({ code: 'INTERNAL', message: 'KEK adapter is closed' });
      } finally {
        await proxy.close();
      }
    });
  });
}
