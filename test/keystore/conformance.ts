// The one conformance suite every key-store backend runs against its real store (a folder,
// LocalStack S3, fake-gcs-server, Azurite). A backend's test file builds a harness and keeps
// only the tests about that store alone.
import { afterAll, describe, expect, it } from 'vitest';
import { StoreError, type StoreBackend } from '../../src/keystore/backend.js';

export interface BackendHarness {
  /** Shown in the test names. */
  readonly name: string;
  /**
   * A backend on a new, empty location (its own prefix or folder). `open(same)` with the
   * location of an earlier call opens a second client of that location, as another host would.
   */
  open(same?: StoreBackend): Promise<StoreBackend>;
  /** Optional: a backend whose store is unreachable (stopped emulator, closed port). */
  readonly unreachable?: () => Promise<StoreBackend>;
  /** Optional: writes a raw object `name` (relative to the location) that is not a key record. */
  readonly putForeign?: (backend: StoreBackend, name: string, body: Buffer) => Promise<void>;
}

const signal = (): AbortSignal => AbortSignal.timeout(10_000);
const body = (text: string): Buffer => Buffer.from(text, 'utf8');

async function collect(backend: StoreBackend, prefix = ''): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const item of backend.list(prefix, signal())) out.set(item.id, item.revision);
  return out;
}

/** Every id character the protocol allows, and the longest id. */
const AWKWARD_IDS = ['pg/cluster-1/wal', 'app:users.email', 'a..b', '-._', `x${'/:'.repeat(127)}y`.slice(0, 256), 'Z'.repeat(256)];

export function describeBackendConformance(h: BackendHarness): void {
  describe(`key-store backend conformance: ${h.name}`, () => {
    const opened: StoreBackend[] = [];
    const open = async (same?: StoreBackend): Promise<StoreBackend> => {
      const b = await h.open(same);
      opened.push(b);
      return b;
    };
    afterAll(async () => {
      await Promise.allSettled(opened.map((b) => b.close()));
    });

    it('reads nothing for an id never written', async () => {
      const b = await open();
      expect(await b.read('never/written', signal())).toBeUndefined();
      expect(await collect(b)).toEqual(new Map());
    });

    it('creates only when absent, and reads back exactly the bytes and revision written', async () => {
      const b = await open();
      const first = await b.write('k1', body('{"one":1}'), null, signal());
      if (!first.ok) throw new Error('create failed');
      const read = await b.read('k1', signal());
      expect(read?.body.toString('utf8')).toBe('{"one":1}');
      expect(read?.revision).toBe(first.revision);
      expect(await b.write('k1', body('{"two":2}'), null, signal())).toEqual({ ok: false, conflict: true });
      expect((await b.read('k1', signal()))?.body.toString('utf8')).toBe('{"one":1}');
    });

    it('replaces only at the expected revision (compare-and-swap)', async () => {
      const b = await open();
      const v1 = await b.write('k', body('1'), null, signal());
      if (!v1.ok) throw new Error('create failed');
      const v2 = await b.write('k', body('2'), v1.revision, signal());
      if (!v2.ok) throw new Error('swap failed');
      expect(v2.revision).not.toBe(v1.revision);
      // The old revision lost: a second writer that read v1 must re-read.
      expect(await b.write('k', body('stale'), v1.revision, signal())).toEqual({ ok: false, conflict: true });
      // An expected revision on an absent object is a conflict too, never a create.
      expect(await b.write('absent', body('x'), v1.revision, signal())).toEqual({ ok: false, conflict: true });
      expect((await b.read('k', signal()))?.body.toString('utf8')).toBe('2');
      expect(await b.read('absent', signal())).toBeUndefined();
    });

    it('lets exactly one of two hosts win a create race and a swap race (20 rounds each)', async () => {
      const a = await open();
      const b = await open(a);
      for (let round = 0; round < 20; round++) {
        const id = `race/${round}`;
        const created = await Promise.all([a.write(id, body(`a${round}`), null, signal()), b.write(id, body(`b${round}`), null, signal())]);
        expect(created.filter((r) => r.ok)).toHaveLength(1);
        const winner = created[0]?.ok ? `a${round}` : `b${round}`;
        const seen = await b.read(id, signal());
        expect(seen?.body.toString('utf8')).toBe(winner);
        const swapped = await Promise.all([
          a.write(id, body(`A${round}`), seen?.revision ?? null, signal()),
          b.write(id, body(`B${round}`), seen?.revision ?? null, signal()),
        ]);
        expect(swapped.filter((r) => r.ok)).toHaveLength(1);
        expect((await a.read(id, signal()))?.body.toString('utf8')).toBe(swapped[0]?.ok ? `A${round}` : `B${round}`);
      }
    });

    it('stores every id the protocol allows and lists them by prefix with their revisions', async () => {
      const b = await open();
      const revisions = new Map<string, string>();
      for (const id of AWKWARD_IDS) {
        const r = await b.write(id, body(JSON.stringify({ id })), null, signal());
        if (!r.ok) throw new Error(`create ${id} failed`);
        revisions.set(id, r.revision);
        expect(JSON.parse((await b.read(id, signal()))?.body.toString('utf8') ?? 'null')).toEqual({ id });
      }
      expect(await collect(b)).toEqual(revisions);
      expect([...(await collect(b, 'pg/')).keys()]).toEqual(['pg/cluster-1/wal']);
      expect([...(await collect(b, 'x/:')).keys()]).toEqual([AWKWARD_IDS[4]]);
      expect([...(await collect(b, 'nothing/')).keys()]).toEqual([]);
      // `a` is a prefix of `a..b` and of `app:users.email`.
      expect([...(await collect(b, 'a')).keys()].sort()).toEqual(['a..b', 'app:users.email']);
    });

    it('lists more ids than one page holds', async () => {
      const b = await open();
      const ids = Array.from({ length: 1100 }, (_, i) => `many/${String(i).padStart(4, '0')}`);
      for (let i = 0; i < ids.length; i += 50) {
        await Promise.all(ids.slice(i, i + 50).map((id) => b.write(id, body('{}'), null, signal())));
      }
      const listed = await collect(b, 'many/');
      expect(listed.size).toBe(1100);
      expect([...listed.keys()].sort()).toEqual(ids);
    }, 120_000);

    it('keeps two hosts consistent: a write on one is read at once on the other', async () => {
      const a = await open();
      const b = await open(a);
      const made = await a.write('shared', body('from a'), null, signal());
      const seen = await b.read('shared', signal());
      expect(seen?.body.toString('utf8')).toBe('from a');
      expect(made.ok && seen?.revision).toBe(made.ok ? made.revision : false);
      expect([...(await collect(b)).keys()]).toEqual(['shared']);
    });

    if (h.putForeign) {
      const putForeign = h.putForeign;
      it('ignores objects under the location that are not key records', async () => {
        const b = await open();
        await b.write('real', body('{}'), null, signal());
        await putForeign(b, 'README.txt', body('not a record'));
        await putForeign(b, 'sub%zz.json', body('{}'));
        await putForeign(b, '%61.json', body('{}')); // a non-canonical spelling of `a`
        expect([...(await collect(b)).keys()]).toEqual(['real']);
        expect(await b.read('a', signal())).toBeUndefined();
      });
    }

    if (h.unreachable) {
      const unreachable = h.unreachable;
      it('fails every call with a StoreError, within its signal, when the store is unreachable', async () => {
        const b = await unreachable();
        opened.push(b);
        const quick = (): AbortSignal => AbortSignal.timeout(3_000);
        const started = performance.now();
        await expect(b.read('k', quick())).rejects.toBeInstanceOf(StoreError);
        await expect(b.write('k', body('x'), null, quick())).rejects.toBeInstanceOf(StoreError);
        await expect(collect(b)).rejects.toBeInstanceOf(StoreError);
        expect(performance.now() - started).toBeLessThan(3 * 3_000 + 2_000);
      }, 30_000);
    }
  });
}
