import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FileBackend, fileNameFor } from '../../src/keystore/file/index.js';
import { KeyStore } from '../../src/keystore/key-store.js';
import { Snapshot } from '../../src/keystore/snapshot.js';
import type { KeyRecord, VersionRecord } from '../../src/keystore/types.js';
import { createLogger } from '../../src/log/logger.js';
import { MemoryBackend } from '../helpers/memory-backend.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const log = createLogger('silent');

function record(id: string, versions = 1): KeyRecord {
  return {
    format: 2,
    id,
    created: '2026-01-01T00:00:00.000Z',
    versions: Array.from({ length: versions }, (_, i) => ({
      version: i + 1,
      wraps: [{ kek: 'local://local-kek', wrapped: Buffer.alloc(61, i + 1).toString('base64') }],
      commit: Buffer.alloc(32, 0xaa).toString('base64'),
      created: '2026-01-01T00:00:00.000Z',
      state: 'enabled' as const,
    })),
  };
}
const json = (r: KeyRecord): string => `${JSON.stringify(r, null, 2)}\n`;
const put = (store: KeyStore, r: KeyRecord) => store.update(r.id, async () => r);
const records = (dir: string) => readdir(dir).then((names) => names.filter((n) => n.endsWith('.json')));

const stores: KeyStore[] = [];
afterEach(async () => {
  vi.useRealTimers();
  await Promise.allSettled(stores.splice(0).map((s) => s.close()));
});
function keep(store: KeyStore): KeyStore {
  stores.push(store);
  return store;
}

describe('fileNameFor', () => {
  it.each([
    ['demo/key', 'demo%2Fkey.json'],
    ['a:b', 'a%3Ab.json'],
    ['plain-Name_1.x', 'plain-Name_1.x.json'],
    ['..', '...json'],
  ])('%s → %s', (id, name) => {
    expect(fileNameFor(id)).toBe(name);
  });

  it('is injective for ids that differ only in escaped characters', () => {
    expect(fileNameFor('a/b')).not.toBe(fileNameFor('a:b'));
    expect(fileNameFor('a%2Fb')).not.toBe(fileNameFor('a/b'));
  });
});

describe('KeyStore over a folder', () => {
  const open = async (dir: string, cacheRecords?: number) =>
    keep(new KeyStore(await FileBackend.open(join(dir, 'keys')), log, cacheRecords === undefined ? {} : { cacheRecords }));

  it('persists records durably and reads them after a reopen, reading nothing at start', async () => {
    const dir = await tmp();
    const store = await open(dir);
    await put(store, record('pg/cluster-1/tde', 2));
    await put(store, record('app:users'));
    expect(await store.list()).toEqual(['app:users', 'pg/cluster-1/tde']);
    expect(await store.list('pg/')).toEqual(['pg/cluster-1/tde']);
    await store.close();

    const again = await open(dir);
    expect(again.peek('pg/cluster-1/tde')).toBeUndefined(); // nothing loaded at start
    expect(await again.get('pg/cluster-1/tde')).toEqual(record('pg/cluster-1/tde', 2));
    expect(again.peek('pg/cluster-1/tde')).toEqual(record('pg/cluster-1/tde', 2));
  });

  it('writes files with mode 0600 holding exactly the record, and leaves no temporary files', async () => {
    const dir = await tmp();
    const store = await open(dir);
    for (const n of [1, 2, 3]) await put(store, record('a', n));
    expect((await readdir(join(dir, 'keys'))).sort()).toEqual(['a.json', 'keystore.lock']);
    expect((await stat(join(dir, 'keys', 'a.json'))).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(join(dir, 'keys', 'a.json'), 'utf8'))).toEqual(record('a', 3));
  });

  it('serves no damaged record, never overwrites it, and says so', async () => {
    const dir = await tmp();
    const store = await open(dir);
    const bad = join(dir, 'keys', 'broken.json');
    await writeFile(bad, '{"format":1,"id":"broken", trunc');
    await writeFile(join(dir, 'keys', 'other.json'), json(record('x')));
    await writeFile(join(dir, 'keys', 'empty.json'), JSON.stringify({ ...record('empty'), versions: [] }));
    for (const id of ['broken', 'other', 'empty']) {
      await expect(store.get(id)).rejects.toMatchObject({ code: 'INTERNAL', message: 'stored key record is damaged; see the gateway log' });
    }
    await expect(put(store, record('broken'))).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(await readFile(bad, 'utf8')).toBe('{"format":1,"id":"broken", trunc');
  });

  it('rejects an invalid record without touching memory or disk', async () => {
    const dir = await tmp();
    const store = await open(dir);
    await expect(put(store, { ...record('k'), versions: [] })).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(store.update('k', async () => record('other'))).rejects.toMatchObject({ code: 'INTERNAL' });
    expect(store.peek('k')).toBeUndefined();
    expect(await records(join(dir, 'keys'))).toEqual([]);
  });

  it('removes temporary files left by interrupted writes when it opens, so no copy of a destroyed version survives', async () => {
    const dir = await tmp();
    const store = await open(dir);
    const withV1 = record('k', 2);
    await put(store, withV1);
    // What a kill -9 between write and rename leaves: a complete record, with version 1 still enabled.
    await writeFile(join(dir, 'keys', `${fileNameFor('k')}.4242.tmp`), json(withV1));
    await writeFile(join(dir, 'keys', `${fileNameFor('other')}.4243.tmp`), 'half a reco');
    const destroyed = {
      ...withV1,
      versions: withV1.versions.map((v) => (v.version === 1 ? { ...v, wraps: [], commit: null, state: 'destroyed' as const } : v)),
    };
    await put(store, destroyed);
    await store.close();
    const again = await open(dir);
    expect((await readdir(join(dir, 'keys'))).sort()).toEqual([fileNameFor('k'), 'keystore.lock']);
    expect((await again.get('k'))?.versions[0]?.wraps).toEqual([]);
  });

  it('stores every id the protocol accepts, however long its escaped file name, and lists them', async () => {
    const dir = await tmp();
    const store = await open(dir);
    const ids = [':'.repeat(256), `${'a/'.repeat(127)}ab`, 'x'.repeat(256), `${':'.repeat(255)}a`];
    for (const id of ids) await put(store, record(id));
    const names = await records(join(dir, 'keys'));
    expect(names).toHaveLength(ids.length);
    for (const name of names) expect(Buffer.byteLength(name)).toBeLessThanOrEqual(200);
    await store.close();
    const again = await open(dir);
    for (const id of ids) expect((await again.get(id))?.id).toBe(id);
    expect(await again.list()).toEqual([...ids].sort());
    expect(await again.list(':::')).toEqual([':'.repeat(256), `${':'.repeat(255)}a`]);
  });

  it('holds at most cacheRecords records in memory and reads the others again when needed', async () => {
    const dir = await tmp();
    const store = await open(dir, 2);
    for (const id of ['a', 'b', 'c']) await put(store, record(id));
    expect(store.peek('a')).toBeUndefined();
    expect(store.peek('c')).toEqual(record('c'));
    expect(await store.get('a')).toEqual(record('a'));
  });
});

/** `record` with version `n` destroyed. */
function withDestroyed(r: KeyRecord, n: number): KeyRecord {
  return {
    ...r,
    versions: r.versions.map((v): VersionRecord => (v.version === n ? { ...v, wraps: [], commit: null, state: 'destroyed' } : v)),
  };
}

describe('KeyStore logic (in-memory backend)', () => {
  it('re-reads and runs the change again when another writer got in first: nothing is lost', async () => {
    const backend = new MemoryBackend();
    backend.putAsOther('k', json(record('k', 1)));
    const store = keep(new KeyStore(backend, log));
    await store.get('k');
    // Another gateway adds version 2 just before our write of version 2.
    backend.beforeWrite = () => {
      backend.beforeWrite = undefined;
      backend.putAsOther('k', json(record('k', 2)));
    };
    const seen: number[] = [];
    const stored = await store.update('k', async (current) => {
      const n = current?.versions.length ?? 0;
      seen.push(n);
      return record('k', n + 1);
    });
    expect(seen).toEqual([1, 2]);
    expect(stored).toEqual(record('k', 3));
    // Counted for metrics: the lost compare-and-swap, and each backend call by outcome.
    expect(store.stats.conflicts).toBe(1);
    // Both writes were answered (ok); the first lost its compare-and-swap.
    expect(store.stats.operations.write).toEqual({ ok: 2, error: 0, timeout: 0, backoff: 0 });
    expect(store.stats.operations.read.ok).toBe(backend.calls.filter((c) => c.startsWith('read')).length);
    expect(JSON.parse(backend.objects.get('k')?.body.toString() ?? '')).toEqual(record('k', 3));
  });

  it('creates only if absent: a create race lost leaves the winner in place and in memory', async () => {
    const backend = new MemoryBackend();
    const store = keep(new KeyStore(backend, log));
    backend.beforeWrite = () => {
      backend.beforeWrite = undefined;
      backend.putAsOther('k', json(record('k', 1)));
    };
    let made = 0;
    const result = await store.update('k', async (current) => {
      if (current !== undefined) return undefined;
      made++;
      return record('k', 3);
    });
    expect(made).toBe(1);
    expect(result).toEqual(record('k', 1));
    expect(store.peek('k')).toEqual(record('k', 1));
  });

  it('gives up with STORE_UNAVAILABLE after too many lost races', async () => {
    const backend = new MemoryBackend();
    backend.putAsOther('k', json(record('k')));
    backend.beforeWrite = () => void backend.putAsOther('k', json(record('k')));
    const store = keep(new KeyStore(backend, log));
    await expect(store.update('k', async (r) => r && { ...r, created: 'x' })).rejects.toMatchObject({
      code: 'STORE_UNAVAILABLE',
      message: 'key record kept changing under this gateway; try again',
    });
  });

  it('answers STORE_UNAVAILABLE within timeoutMs when the store hangs, fails fast during a back-off, and recovers by itself', async () => {
    vi.useFakeTimers();
    let now = 0;
    const backend = new MemoryBackend();
    const store = keep(new KeyStore(backend, log, { timeoutMs: 1_000, now: () => now }));
    backend.mode = 'hang';
    const settled = expect(store.update('k', async () => record('k'))).rejects.toMatchObject({
      code: 'STORE_UNAVAILABLE',
      message: 'key store read timed out after 1000 ms',
    });
    await vi.advanceTimersByTimeAsync(1_000);
    await settled;
    // Inside the back-off: no call is made, the answer is immediate.
    const calls = backend.calls.length;
    await expect(store.get('x')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect(backend.calls.length).toBe(calls);
    expect(store.stats.operations.read).toEqual({ ok: 0, error: 0, timeout: 1, backoff: 1 });
    // The store is back; after the back-off the next call goes through.
    backend.mode = 'up';
    now += 10_000;
    expect(await store.update('k', async () => record('k'))).toEqual(record('k'));
  });

  it('a write whose outcome is unknown forgets the record, so the next use reads it again', async () => {
    const backend = new MemoryBackend();
    backend.putAsOther('k', json(record('k')));
    const store = keep(new KeyStore(backend, log));
    await store.get('k');
    backend.mode = 'fail';
    await expect(store.update('k', async () => record('k', 2))).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect(store.peek('k')).toBeUndefined();
    expect(store.stats.operations.write.error).toBe(1);
  });

  it('refresh re-reads only changed records, tells watchers, and drops records that are gone', async () => {
    const backend = new MemoryBackend();
    backend.putAsOther('a', json(record('a')));
    backend.putAsOther('b', json(record('b')));
    backend.putAsOther('c', json(record('c')));
    const store = keep(new KeyStore(backend, log));
    for (const id of ['a', 'b', 'c']) await store.get(id);
    const changes: string[] = [];
    store.watch((id, before, after) => changes.push(`${id} ${before?.versions.length ?? 0}->${after?.versions.length ?? 0}`));
    backend.putAsOther('a', json(record('a', 2)));
    backend.objects.delete('b');
    backend.calls.length = 0;
    await store.refresh();
    expect(backend.calls).toEqual(['list', 'read a']);
    expect(changes.sort()).toEqual(['a 1->2', 'b 1->0']);
    expect(store.peek('a')).toEqual(record('a', 2));
    expect(store.peek('b')).toBeUndefined();
  });

  it('an unknown id is looked up in the store every time, so a key made elsewhere is found at once', async () => {
    const backend = new MemoryBackend();
    const store = keep(new KeyStore(backend, log));
    expect(await store.get('new')).toBeUndefined();
    backend.putAsOther('new', json(record('new')));
    expect(await store.get('new')).toEqual(record('new'));
  });

  it('concurrent reads of one id share one backend call', async () => {
    const backend = new MemoryBackend();
    backend.putAsOther('k', json(record('k')));
    const store = keep(new KeyStore(backend, log));
    await Promise.all(Array.from({ length: 10 }, () => store.get('k')));
    expect(backend.calls.filter((c) => c === 'read k')).toHaveLength(1);
  });
});

describe('KeyStore with a snapshot (shared stores)', () => {
  it('serves reads and LIST from the snapshot while the store is down, and a gateway can start on it', async () => {
    const dir = await tmp();
    const backend = new MemoryBackend();
    backend.putAsOther('a', json(record('a')));
    const first = keep(new KeyStore(backend, log, { snapshot: await Snapshot.open(join(dir, 'snapshot')) }));
    await put(first, record('b', 2));
    await first.get('a');
    await first.close();

    backend.mode = 'fail';
    const second = keep(new KeyStore(backend, log, { snapshot: await Snapshot.open(join(dir, 'snapshot')) }));
    expect(await second.get('a')).toEqual(record('a'));
    expect(await second.get('b')).toEqual(record('b', 2));
    expect(await second.list()).toEqual(['a', 'b']);
    // Unknown to the snapshot: only the store could say, and it cannot.
    await expect(second.get('c')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    // Writes need the store.
    await expect(put(second, record('a', 2))).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect(JSON.parse(backend.objects.get('a')?.body.toString() ?? '')).toEqual(record('a'));
    // Back: the next write reads the store's revision first and goes through.
    backend.mode = 'up';
    expect(await put(second, record('a', 2))).toEqual(record('a', 2));
  });

  it('refresh brings stale snapshot copies up to date, so a version destroyed elsewhere is gone from the copy too', async () => {
    const dir = await tmp();
    const backend = new MemoryBackend();
    backend.putAsOther('k', json(record('k', 2)));
    backend.putAsOther('other', json(record('other')));
    const store = keep(new KeyStore(backend, log, { snapshot: await Snapshot.open(join(dir, 'snapshot')), cacheRecords: 1 }));
    await store.get('k');
    await store.get('other'); // pushes k out of memory: only the snapshot holds it now
    expect(store.peek('k')).toBeUndefined();
    await store.refresh();
    backend.putAsOther('k', json(withDestroyed(record('k', 2), 1)));
    await store.refresh();
    await store.close();
    expect(JSON.parse(await readFile(join(dir, 'snapshot', 'k.json'), 'utf8'))).toEqual(withDestroyed(record('k', 2), 1));
  });
});
