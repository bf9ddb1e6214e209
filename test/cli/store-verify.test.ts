import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fileNameFor } from '../../src/keystore/file/index.js';
import { checkRecord } from '../../src/keystore/verify.js';
import type { KeyRecord } from '../../src/keystore/types.js';
import { rawConnect, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { copyOfStore, gatewayWithKeys, IDS, LONG_IDS, recordFiles, recordPath } from './store-fixtures.js';
import { kmsgw, requireBuiltCli } from '../helpers/cli.js';

const tmp = useTmpDirs();
const running = useRunningGateways();
requireBuiltCli();

const TDE = 'pg/cluster-1/tde';

function record(id: string): KeyRecord {
  const v = (version: number, state: 'enabled' | 'destroyed') => ({
    version,
    wraps: state === 'enabled' ? [{ kek: 'fake://k', wrapped: Buffer.alloc(44, version).toString('base64') }] : [],
    commit: state === 'enabled' ? Buffer.alloc(32, 0xaa).toString('base64') : null,
    created: '2026-01-01T00:00:00.000Z',
    state,
  });
  return { format: 2, id, created: '2026-01-01T00:00:00.000Z', versions: [v(1, 'destroyed'), v(2, 'enabled')] };
}

/** The same record as a 0.1 gateway wrote it (format 1: one KEK, its blob in `wrapped`). */
function formatOne(id: string): unknown {
  const r = record(id);
  return {
    ...r,
    format: 1,
    versions: r.versions.map(({ wraps, ...v }) => ({ ...v, kek: 'fake://k', wrapped: wraps[0]?.wrapped ?? null })),
  };
}

const problemsOf = (value: unknown, id = 'k') => {
  const check = checkRecord(id, Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)));
  return check.ok ? [] : check.problems;
};

describe('checkRecord', () => {
  it('accepts a sound record, with destroyed versions', () => {
    expect(problemsOf(record('k'))).toEqual([]);
  });

  it('reads a format-1 record as the same format-2 record', () => {
    const check = checkRecord('k', Buffer.from(JSON.stringify(formatOne('k'))));
    expect(check).toEqual({ ok: true, record: record('k') });
    const v1 = formatOne('k') as { versions: Array<Record<string, unknown>> };
    expect(problemsOf({ ...v1, versions: [v1.versions[0], { ...v1.versions[1], wrapped: '!!' }] })).toEqual([
      'version 2: wrapped must be base64',
    ]);
  });

  it('names what is wrong, field by field, never a value', () => {
    const r = record('k');
    const v2 = r.versions[1] as Record<string, unknown>;
    expect(problemsOf('{"format":1,')).toEqual(['not valid UTF-8 JSON']);
    expect(checkRecord('k', Buffer.from([0x7b, 0xff, 0x7d])).ok).toBe(false);
    expect(problemsOf([1])).toEqual(['not a key record: Invalid input: expected object, received array']);
    expect(problemsOf(record('other'))).toEqual(['holds key id other, which is stored under another name']);
    expect(problemsOf(record('bad\nid'))).toEqual(['holds key id "bad\\nid", which is stored under another name']);
    expect(problemsOf({ ...r, versions: [r.versions[0], { ...v2, commit: undefined }] })).toEqual(['version 2: commit is missing']);
    expect(problemsOf({ ...r, versions: [r.versions[0], { ...v2, wraps: [] }] })).toEqual(['version 2 is enabled but has no wrapped DEK']);
    expect(problemsOf({ ...r, versions: [r.versions[0], { ...v2, commit: null }] })).toEqual([
      'version 2 is enabled but has no commitment tag (commit)',
    ]);
    expect(problemsOf({ ...r, versions: [r.versions[0], { ...v2, commit: Buffer.alloc(16).toString('base64') }] })).toEqual([
      'version 2: commit is 16 bytes, not 32 (HMAC-SHA256)',
    ]);
    const wrap = (wrapped: unknown) => ({ ...v2, wraps: [{ kek: 'fake://k', wrapped }] });
    expect(problemsOf({ ...r, versions: [r.versions[0], wrap('QUJD' + 'x')] })).toEqual([
      'version 2: wraps[0].wrapped is not valid base64',
    ]);
    expect(problemsOf({ ...r, versions: [r.versions[0], wrap('')] })).toEqual([
      'version 2: wraps.0.wrapped Too small: expected string to have >=1 characters',
    ]);
    expect(
      problemsOf({ ...r, versions: [r.versions[0], { ...v2, wraps: [...(v2.wraps as unknown[]), ...(v2.wraps as unknown[])] }] }),
    ).toEqual(['version 2 lists a KEK twice']);
    expect(problemsOf({ ...r, versions: [{ ...v2, state: 'destroyed' }] })).toEqual([
      'version 2 is destroyed but still holds a wrapped DEK',
      'version 2 is destroyed but still holds a commitment tag',
    ]);
    expect(problemsOf({ ...r, versions: [v2, { ...v2 }] })).toEqual(['version numbers are not strictly increasing (2 after 2)']);
    expect(problemsOf({ ...r, versions: [{ ...v2, version: 3 }, v2] })).toEqual([
      'version numbers are not strictly increasing (2 after 3)',
    ]);
    expect(problemsOf({ ...r, format: 3 })).toEqual(["format Invalid discriminator value. Expected '2' | '1'"]);
    expect(problemsOf({ ...r, versions: [r.versions[0], wrap('!!')] })).toEqual(['version 2: wraps.0.wrapped must be base64']);
    const blob = (v2.wraps as Array<{ wrapped: string }>)[0]?.wrapped as string;
    for (const p of problemsOf({ ...r, versions: [{ ...wrap(5), commit: blob, extra: blob }] })) expect(p).not.toContain(blob);
  });
});

describe('kmsgw store verify', () => {
  it("verifies a running gateway's store without taking its lock, and finds no problem", async () => {
    const dir = await tmp();
    const { gw, url } = await gatewayWithKeys(dir);
    running.push(gw);
    const r = await kmsgw(['store', 'verify', url]);
    expect(r).toEqual({ code: 0, stdout: `verified ${IDS.length} records: 0 problems\n`, stderr: '' });
    // The gateway still owns its store: it writes on.
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`ROTATE ${TDE}`)).toBe('OK 4');
    c.close();
    const pg = await kmsgw(['store', 'verify', url, '--prefix', 'pg/']);
    expect(pg).toMatchObject({ code: 0, stdout: 'verified 1 records: 0 problems\n' });
  });

  it('names every damaged record, one line per problem, never printing a wrapped DEK', async () => {
    const dir = await tmp();
    const { gw, keysDir } = await gatewayWithKeys(dir);
    running.push(gw);
    const store = await copyOfStore(keysDir, join(dir, 'damaged'));
    const originals = await recordFiles(store);
    const edit = async (id: string, change: (r: Record<string, unknown> & { versions: Array<Record<string, unknown>> }) => void) => {
      const path = recordPath(store, id);
      const r = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown> & { versions: Array<Record<string, unknown>> };
      change(r);
      await writeFile(path, JSON.stringify(r));
    };
    await writeFile(recordPath(store, 'a..b'), '{"format": 1, "id": "a..b", "versions": [');
    await edit('app:users.email', (r) => delete r.versions[0]?.commit);
    await edit(TDE, (r) => {
      (r.versions[2] as Record<string, unknown>).wraps = [];
    });
    // A record under another id's name: a short one, and a long id's hashed file.
    await rename(recordPath(store, LONG_IDS[1]), join(store, 'moved.json'));
    await edit(LONG_IDS[0], (r) => (r.id = 'someone-else'));
    const r = await kmsgw(['store', 'verify', `file://${store}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('');
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.slice(0, -1).sort()).toEqual(
      [
        'a..b: not valid UTF-8 JSON',
        'app:users.email: version 1: commit is missing',
        `${TDE}: version 3 is enabled but has no wrapped DEK`,
        `moved: holds key id ${LONG_IDS[1]}, which is stored under another name`,
        `${fileNameFor(LONG_IDS[0])}: is not a key record of the id its name says (damaged, or written under the wrong name)`,
      ].sort(),
    );
    expect(lines.at(-1)).toBe(`verified ${IDS.length} records: 5 problems`);
    for (const body of originals.values()) {
      for (const v of (JSON.parse(body.toString()) as KeyRecord).versions)
        for (const w of v.wraps) expect(r.stdout).not.toContain(w.wrapped);
    }
  });

  it("reads the config's keystore section only for object-store URLs", async () => {
    const dir = await tmp();
    const { gw, url } = await gatewayWithKeys(dir);
    running.push(gw);
    await writeFile(join(dir, 'kmsgw.yaml'), 'keystore:\n  endpoint: not-a-url\n');
    const s3 = await kmsgw(['store', 'verify', 's3://kmsgw-test/keys/'], { cwd: dir });
    expect(s3).toMatchObject({ code: 1, stdout: '' });
    expect(s3.stderr).toMatch(/keystore\.endpoint: /);
    expect(await kmsgw(['store', 'verify', url], { cwd: dir })).toMatchObject({
      code: 0,
      stdout: `verified ${IDS.length} records: 0 problems\n`,
    });
    expect((await kmsgw(['store', 'verify', url, '--config', 'kmsgw.yaml'], { cwd: dir })).code).toBe(1);
  });

  it('refuses bad arguments with a usage error', async () => {
    const dir = await tmp();
    expect((await kmsgw(['store', 'verify', 'ftp://x'])).code).toBe(2);
    const endpoint = await kmsgw(['store', 'verify', 's3://kmsgw-test/keys/', '--endpoint', 'not a url'], { cwd: dir });
    expect(endpoint.code).toBe(2);
    expect(endpoint.stderr).toMatch(/^kmsgw: endpoint: /);
    expect((await kmsgw(['store', 'verify', `file://${dir}`, '--concurrency', '0'])).code).toBe(2);
    const missing = await kmsgw(['store', 'verify', `file://${join(dir, 'none')}`]);
    expect(missing).toMatchObject({ code: 1, stdout: '' });
    expect(missing.stderr).toMatch(/^kmsgw: key store folder .*none: .*ENOENT/);
  });
});
