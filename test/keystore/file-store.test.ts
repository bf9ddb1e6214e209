import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileKeyStore, KeyStoreError, fileNameFor } from '../../src/keystore/file-store.js';
import type { KeyRecord } from '../../src/keystore/types.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();

function record(id: string, versions = 1): KeyRecord {
  return {
    format: 1,
    id,
    created: '2026-01-01T00:00:00.000Z',
    versions: Array.from({ length: versions }, (_, i) => ({
      version: i + 1,
      kek: 'local://local-kek',
      wrapped: Buffer.alloc(61, i + 1).toString('base64'),
      commit: Buffer.alloc(32, 0xaa).toString('base64'),
      created: '2026-01-01T00:00:00.000Z',
      state: 'enabled' as const,
    })),
  };
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

describe('FileKeyStore', () => {
  it('persists records durably and reloads them after a reopen', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    await store.put(record('pg/cluster-1/tde', 2));
    await store.put(record('app:users'));
    expect(store.list()).toEqual(['app:users', 'pg/cluster-1/tde']);
    expect(store.list('pg/')).toEqual(['pg/cluster-1/tde']);
    await store.close();

    const again = await FileKeyStore.open(dir);
    expect(again.get('pg/cluster-1/tde')).toEqual(record('pg/cluster-1/tde', 2));
    expect(again.list()).toEqual(['app:users', 'pg/cluster-1/tde']);
    await again.close();
  });

  it('writes files with mode 0600 and leaves no temporary files', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    // Callers put one record per id at a time (KeyService chains each id's changes).
    for (const n of [1, 2, 3]) await store.put(record('a', n));
    const files = await readdir(join(dir, 'keys'));
    expect(files).toEqual(['a.json']);
    expect((await stat(join(dir, 'keys', 'a.json'))).mode & 0o777).toBe(0o600);
    // The last put wins.
    expect(JSON.parse(await readFile(join(dir, 'keys', 'a.json'), 'utf8')).versions).toHaveLength(3);
    await store.close();
  });

  it('never stores anything but wrapped keys: the file holds exactly the record', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    await store.put(record('k'));
    expect(JSON.parse(await readFile(join(dir, 'keys', 'k.json'), 'utf8'))).toEqual(record('k'));
    await store.close();
  });

  it('refuses a second store on the same folder while the first is open', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    await expect(FileKeyStore.open(dir)).rejects.toThrow(/is in use by another running gateway/);
    await store.close();
    const next = await FileKeyStore.open(dir);
    await next.close();
  });

  it('takes over a lock left by a process that is gone', async () => {
    const dir = await tmp();
    await writeFile(join(dir, 'keystore.lock'), '999999999\n');
    const store = await FileKeyStore.open(dir);
    expect((await readFile(join(dir, 'keystore.lock'), 'utf8')).trim()).toBe(String(process.pid));
    await store.close();
  });

  it('stops on a file that does not parse, naming it, and never overwrites it', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    await store.put(record('good'));
    await store.close();
    const bad = join(dir, 'keys', 'broken.json');
    await writeFile(bad, '{"format":1,"id":"broken", trunc');
    const err = await FileKeyStore.open(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeyStoreError);
    expect((err as Error).message).toContain(bad);
    expect(await readFile(bad, 'utf8')).toBe('{"format":1,"id":"broken", trunc');
    // The failed open released its lock.
    const next = await FileKeyStore.open(dir).catch((e: unknown) => e);
    expect(next).toBeInstanceOf(KeyStoreError);
  });

  it('stops on a record that parses but is not valid', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    await store.close();
    const bad = join(dir, 'keys', 'x.json');
    await writeFile(bad, JSON.stringify({ ...record('x'), versions: [] }));
    await expect(FileKeyStore.open(dir)).rejects.toThrow(bad);
  });

  it('stops on a record filed under another id', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    await store.close();
    await writeFile(join(dir, 'keys', 'other.json'), JSON.stringify(record('x')));
    await expect(FileKeyStore.open(dir)).rejects.toThrow(/belongs in another file/);
  });

  it('ignores temporary files from an interrupted write', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    await store.put(record('k'));
    await store.close();
    await writeFile(join(dir, 'keys', 'k.json.123.tmp'), 'half a reco');
    const again = await FileKeyStore.open(dir);
    expect(again.get('k')).toEqual(record('k'));
    await again.close();
  });

  it('removes temporary files left by interrupted writes when it opens, so no copy of a destroyed version survives', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    const withV1 = record('k', 2);
    await store.put(withV1);
    // What a kill -9 between write and rename leaves: a complete record, with version 1 still enabled.
    await writeFile(join(dir, 'keys', `${fileNameFor('k')}.4242.tmp`), JSON.stringify(withV1));
    await writeFile(join(dir, 'keys', `${fileNameFor('other')}.4243.tmp`), 'half a reco');
    const destroyed = {
      ...withV1,
      versions: withV1.versions.map((v) => (v.version === 1 ? { ...v, wrapped: null, commit: null, state: 'destroyed' as const } : v)),
    };
    await store.put(destroyed);
    await store.close();
    const again = await FileKeyStore.open(dir);
    expect(await readdir(join(dir, 'keys'))).toEqual([fileNameFor('k')]);
    expect(again.get('k')?.versions[0]?.wrapped).toBeNull();
    await again.close();
  });

  it('stores every id the protocol accepts, however long its escaped file name', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    const ids = [':'.repeat(256), `${'a/'.repeat(127)}ab`, 'x'.repeat(256), `${':'.repeat(255)}a`];
    for (const id of ids) await store.put(record(id));
    const names = await readdir(join(dir, 'keys'));
    expect(names).toHaveLength(ids.length);
    for (const name of names) expect(Buffer.byteLength(name)).toBeLessThanOrEqual(200);
    await store.close();
    const again = await FileKeyStore.open(dir);
    for (const id of ids) expect(again.get(id)?.id).toBe(id);
    await again.close();
  });

  it('rejects an invalid record without touching memory or disk', async () => {
    const dir = await tmp();
    const store = await FileKeyStore.open(dir);
    await expect(store.put({ ...record('k'), versions: [] })).rejects.toThrow();
    expect(store.get('k')).toBeUndefined();
    expect(await readdir(join(dir, 'keys'))).toEqual([]);
    await store.close();
  });
});
