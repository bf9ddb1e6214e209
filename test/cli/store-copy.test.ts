import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { StoreBackend } from '../../src/keystore/backend.js';
import { copyStore, describeDifference, type CopyEvent } from '../../src/keystore/copy.js';
import { FileBackend, fileNameFor } from '../../src/keystore/file/index.js';
import type { KeyRecord } from '../../src/keystore/types.js';
import { okPayload, rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { copyOfStore, gatewayWithKeys, IDS, LONG_IDS, recordFiles, recordPath } from './store-fixtures.js';
import { kmsgw, requireBuiltCli } from '../helpers/cli.js';

const tmp = useTmpDirs();
const running = useRunningGateways();
requireBuiltCli();

const TDE = 'pg/cluster-1/tde';
const summary = (copied: number, unchanged: number, refused = 0, failed = 0) =>
  `copied ${copied}, unchanged ${unchanged}, refused ${refused}, failed ${failed}`;

describe('kmsgw store copy', () => {
  it("copies a running gateway's store byte for byte, and a gateway on the copy serves the same DEKs", async () => {
    const dir = await tmp();
    const { gw, keysDir, url } = await gatewayWithKeys(dir);
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    const deks = new Map<string, string>();
    for (const id of IDS) deks.set(id, okPayload(await c.ask(`GET ${id}`)));
    deks.set(`${TDE}@2`, okPayload(await c.ask(`GET ${TDE}@2`)));

    const copyDir = join(dir, 'copy', 'data', 'keys'); // created by the copy
    const first = await kmsgw(['store', 'copy', '--from', url, '--to', `file://${copyDir}`]);
    expect(first).toEqual({ code: 0, stdout: `${summary(IDS.length, 0)}\n`, stderr: '' });
    expect(await recordFiles(copyDir)).toEqual(await recordFiles(keysDir));
    expect((await kmsgw(['store', 'verify', `file://${copyDir}`])).stdout).toBe(`verified ${IDS.length} records: 0 problems\n`);

    // Idempotent: a second run finds every record there already.
    const again = await kmsgw(['store', 'copy', '--from', url, '--to', `file://${copyDir}`]);
    expect(again).toEqual({ code: 0, stdout: `${summary(0, IDS.length)}\n`, stderr: '' });

    // The source gateway was never locked out: it still changes its keys.
    expect(await c.ask(`ROTATE ${TDE}`)).toBe('OK 4');
    c.close();

    const copy = await startTestGateway(join(dir, 'copy'), { keys: { defaultKek: 'fake://store-test', autoCreate: false } });
    running.push(copy);
    const d = await rawConnect(copy.socketPath as string);
    for (const [ref, dek] of deks) expect(await d.ask(`GET ${ref}`)).toBe(`OK ${dek}`);
    expect(await d.ask(`GET ${TDE}@1`)).toMatch(/^ERR NOT_FOUND /); // destroyed stays destroyed
    d.close();
  });

  it('resolves relative file:// paths against the current folder and copies only --prefix ids', async () => {
    const dir = await tmp();
    const { gw } = await gatewayWithKeys(dir);
    running.push(gw);
    const r = await kmsgw(['store', 'copy', '--from', 'file://data/keys', '--to', 'file://pg-only', '--prefix', 'pg/'], { cwd: dir });
    expect(r).toEqual({ code: 0, stdout: `${summary(1, 0)}\n`, stderr: '' });
    expect([...(await recordFiles(join(dir, 'pg-only'))).keys()]).toEqual(['pg%2Fcluster-1%2Ftde.json']);
    const same = await kmsgw(['store', 'copy', '--from', 'file://data/keys', '--to', `file://${join(dir, 'data', 'keys')}`], { cwd: dir });
    expect(same.code).toBe(2);
    expect(same.stderr).toMatch(/--from and --to are the same store/);
  });

  it('refuses a destination record that differs, saying how, and replaces it with --force', async () => {
    const dir = await tmp();
    const { gw, keysDir, url } = await gatewayWithKeys(dir);
    running.push(gw);
    const to = `file://${join(dir, 'copy')}`;
    expect((await kmsgw(['store', 'copy', '--from', url, '--to', to])).code).toBe(0);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`ROTATE ${TDE}`)).toBe('OK 4');
    expect(await c.ask(`DESTROY ${TDE}@2`)).toBe('OK 2');
    c.close();
    const copied = recordPath(join(dir, 'copy'), TDE);
    const before = await readFile(copied);

    const refused = await kmsgw(['store', 'copy', '--from', url, '--to', to]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe(
      `refused ${TDE}: differs from the source (versions only in the source: 4; destroyed in the source, enabled in the destination: 2); --force replaces it\n` +
        `${summary(0, IDS.length - 1, 1)}\n`,
    );
    expect(await readFile(copied)).toEqual(before);

    const forced = await kmsgw(['store', 'copy', '--from', url, '--to', to, '--force']);
    expect(forced).toMatchObject({ code: 0, stderr: '' });
    expect(forced.stdout).toBe(
      `replaced ${TDE} (versions only in the source: 4; destroyed in the source, enabled in the destination: 2)\n${summary(1, IDS.length - 1)}\n`,
    );
    expect(await readFile(copied)).toEqual(await readFile(recordPath(keysDir, TDE)));

    // The same content written another way (spacing, key order) counts as unchanged.
    const reordered = JSON.parse((await readFile(recordPath(keysDir, 'a..b'))).toString()) as KeyRecord;
    await writeFile(
      recordPath(join(dir, 'copy'), 'a..b'),
      JSON.stringify({ versions: reordered.versions, id: 'a..b', created: reordered.created, format: 2 }),
    );
    expect((await kmsgw(['store', 'copy', '--from', url, '--to', to])).stdout).toBe(`${summary(0, IDS.length)}\n`);
  });

  it('reports an invalid source record and does not copy it; the others are copied', async () => {
    const dir = await tmp();
    const { gw, keysDir } = await gatewayWithKeys(dir);
    running.push(gw);
    const source = await copyOfStore(keysDir, join(dir, 'source'));
    const r = JSON.parse(await readFile(recordPath(source, 'app:users.email'), 'utf8')) as KeyRecord;
    await writeFile(recordPath(source, 'app:users.email'), JSON.stringify({ ...r, versions: [{ ...r.versions[0], wraps: [] }] }));
    await writeFile(recordPath(source, LONG_IDS[0]), 'not json');
    const to = join(dir, 'copy');
    const out = await kmsgw(['store', 'copy', '--from', `file://${source}`, '--to', `file://${to}`]);
    expect(out.code).toBe(1);
    expect(out.stdout.split('\n').sort()).toEqual(
      [
        '',
        `failed ${fileNameFor(LONG_IDS[0])}: not copied: is not a key record of the id its name says (damaged, or written under the wrong name)`,
        'failed app:users.email: invalid in the source, not copied: version 1 is enabled but has no wrapped DEK',
        summary(IDS.length - 2, 0, 0, 2),
      ].sort(),
    );
    expect(existsSync(recordPath(to, 'app:users.email'))).toBe(false);
    expect(existsSync(recordPath(to, LONG_IDS[0]))).toBe(false);
    expect((await recordFiles(to)).size).toBe(IDS.length - 2);
  });

  it('copies thousands of records, printing progress to stderr at most once a second', async () => {
    const dir = await tmp();
    const source = join(dir, 'many');
    await mkdir(source);
    const count = 1500;
    const record = (id: string): KeyRecord => ({
      format: 2,
      id,
      created: '2026-01-01T00:00:00.000Z',
      versions: [
        {
          version: 1,
          wraps: [{ kek: 'fake://k', wrapped: Buffer.alloc(44, id.length).toString('base64') }],
          commit: Buffer.alloc(32, 1).toString('base64'),
          created: '2026-01-01T00:00:00.000Z',
          state: 'enabled',
        },
      ],
    });
    await Promise.all(
      Array.from({ length: count }, (_, i) => `bulk/${String(i).padStart(5, '0')}`).map((id) =>
        writeFile(recordPath(source, id), `${JSON.stringify(record(id), null, 2)}\n`),
      ),
    );
    const started = Date.now();
    const r = await kmsgw(['store', 'copy', '--from', `file://${source}`, '--to', `file://${join(dir, 'copy')}`, '--concurrency', '32']);
    const seconds = (Date.now() - started) / 1000;
    expect(r).toMatchObject({ code: 0, stdout: `${summary(count, 0)}\n` });
    const progress = r.stderr.split('\n').filter(Boolean);
    for (const line of progress) expect(line).toMatch(/^copy: \d+ records done \(copied \d+, unchanged 0, refused 0, failed 0\)$/);
    expect(progress.length).toBeLessThanOrEqual(Math.ceil(seconds));
    if (seconds > 1.5) expect(progress.length).toBeGreaterThan(0);
    expect((await recordFiles(join(dir, 'copy'))).size).toBe(count);
  }, 60_000);
});

/** A real folder backend whose records another writer changes right after `read` returns, once per id. */
function racing(backend: StoreBackend, other: (id: string) => Promise<void>): StoreBackend {
  const raced = new Set<string>();
  return {
    location: backend.location,
    read: async (id, signal) => {
      const got = await backend.read(id, signal);
      if (!raced.has(id)) {
        raced.add(id);
        await other(id);
      }
      return got;
    },
    write: (id, body, expected, signal) => backend.write(id, body, expected, signal),
    list: (prefix, signal) => backend.list(prefix, signal),
    close: () => backend.close(),
  };
}

describe('copyStore', () => {
  it('reports a write that loses a race to another writer, and neither retries nor overwrites it', async () => {
    const dir = await tmp();
    const { gw, keysDir } = await gatewayWithKeys(dir);
    running.push(gw);
    const source = await FileBackend.open(keysDir, { readOnly: true });
    const destDir = join(dir, 'dest');
    await mkdir(destDir);
    const dest: StoreBackend = await FileBackend.open(destDir);
    const theirs = Buffer.from('{"written": "by someone else"}');
    const signal = AbortSignal.timeout(10_000);
    // Missing at first read; created by the other writer before our create-only write.
    const created = racing(dest, async (id) => {
      if (id === TDE) expect(await dest.write(id, theirs, null, signal)).toMatchObject({ ok: true });
    });
    const events: CopyEvent[] = [];
    const first = await copyStore(source, created, { onEvent: (e) => events.push(e) });
    expect(first).toEqual({ copied: IDS.length - 1, unchanged: 0, refused: 0, failed: 1 });
    expect(events).toEqual([
      { kind: 'failed', id: TDE, problem: 'someone else created it in the destination meanwhile; left as it is (run again to compare)' },
    ]);
    expect((await dest.read(TDE, signal))?.body).toEqual(theirs);

    // --force: the record read is replaced only if it is still the one read.
    const replaced = racing(dest, async (id) => {
      if (id !== TDE) return;
      const now = await dest.read(id, signal);
      expect(await dest.write(id, Buffer.from('{"again": true}'), now?.revision ?? null, signal)).toMatchObject({ ok: true });
    });
    events.length = 0;
    const second = await copyStore(source, replaced, { force: true, onEvent: (e) => events.push(e) });
    expect(second).toEqual({ copied: 0, unchanged: IDS.length - 1, refused: 0, failed: 1 });
    expect(events).toEqual([
      { kind: 'failed', id: TDE, problem: 'changed in the destination since it was read; not replaced (run again to compare)' },
    ]);
    expect((await dest.read(TDE, signal))?.body.toString()).toBe('{"again": true}');

    // Without a race, --force replaces it, and says the destination held no key record.
    events.length = 0;
    const third = await copyStore(source, dest, { force: true, concurrency: 1, onEvent: (e) => events.push(e) });
    expect(third).toEqual({ copied: 1, unchanged: IDS.length - 1, refused: 0, failed: 0 });
    expect(events).toEqual([{ kind: 'replaced', id: TDE, difference: 'the destination holds something that is not a valid key record' }]);
    await Promise.all([source.close(), dest.close()]);
  });

  it('gives up, after the calls under way, when the store fails call after call', async () => {
    const dir = await tmp();
    const { gw, keysDir } = await gatewayWithKeys(dir);
    running.push(gw);
    const source = await FileBackend.open(keysDir, { readOnly: true });
    const notAFolder = join(dir, 'file');
    await writeFile(notAFolder, 'x');
    const broken = await FileBackend.open(notAFolder, { readOnly: true });
    const events: CopyEvent[] = [];
    await expect(copyStore(source, broken, { maxFailuresInARow: 3, concurrency: 1, onEvent: (e) => events.push(e) })).rejects.toThrow(
      /^giving up after 3 store calls failed in a row; the last: key store read failed: /,
    );
    expect(events).toHaveLength(3);
    expect(events[0]).toMatchObject({
      kind: 'failed',
      problem: expect.stringMatching(/^reading the destination failed: key store read failed: /),
    });
    await Promise.all([source.close(), broken.close()]);
  });
});

describe('describeDifference', () => {
  const v = (version: number, state: 'enabled' | 'destroyed', kek = 'fake://a') => ({
    version,
    wraps: state === 'enabled' ? [{ kek, wrapped: Buffer.alloc(40, version).toString('base64') }] : [],
    commit: state === 'enabled' ? Buffer.alloc(32, version).toString('base64') : null,
    created: '2026-01-01T00:00:00.000Z',
    state,
  });
  const rec = (...versions: KeyRecord['versions']): KeyRecord => ({
    format: 2,
    id: 'k',
    created: '2026-01-01T00:00:00.000Z',
    versions: [...versions],
  });
  const diff = (src: KeyRecord, dst: unknown) => describeDifference(src, Buffer.from(JSON.stringify(dst)));

  it('says what a --force replacement would lose or bring back, never a wrapped DEK', () => {
    expect(diff(rec(v(1, 'enabled')), rec(v(1, 'enabled'), v(2, 'enabled')))).toBe('versions only in the destination: 2');
    expect(diff(rec(v(1, 'enabled'), v(2, 'enabled')), rec(v(1, 'destroyed'), v(2, 'enabled')))).toBe(
      'destroyed in the destination, enabled in the source: 1',
    );
    expect(diff(rec(v(1, 'enabled')), rec(v(1, 'enabled', 'fake://b')))).toBe('wrapped differently (another KEK, or rewrapped): 1');
    expect(diff(rec(v(1, 'enabled')), { ...rec(v(1, 'enabled')), created: '2027-01-01T00:00:00.000Z' })).toBe(
      'other fields differ (created times, encryption counts)',
    );
    expect(diff(rec(v(1, 'enabled')), { ...rec(v(1, 'enabled')), id: 'j' })).toBe('the destination holds key id "j"');
    expect(describeDifference(rec(v(1, 'enabled')), Buffer.from('{'))).toBe('the destination holds something that is not valid JSON');
  });
});
