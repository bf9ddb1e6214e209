// `kmsgw recover` end to end on real file:// stores and local:// KEK files: records are made by hand (the old
// KEK then deleted, standing for a lost KMS), recovered with an age-keygen identity into a new store under a new
// KEK, and unwrapped there. The gateway's own path (keys.recovery, add-recovery) is tested with the gateway.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createWrapper, ensureLocalKek } from '../../adapters/local/index.js';
import { AdapterSettingsSchema } from '../../adapters/settings.js';
import { commitTag } from '../../src/crypto/commit.js';
import { FileBackend } from '../../src/keystore/file/index.js';
import { serialize } from '../../src/keystore/key-store.js';
import { KeyRecordSchema, type KeyRecord, type VersionRecord } from '../../src/keystore/types.js';
import { sealForRecovery } from '../../src/recovery/age.js';
import { kmsgw, requireBuiltCli, type Run } from '../helpers/cli.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { age, ageKeygen, requireAgeTools } from './age-cli.js';

const tmp = useTmpDirs();
requireBuiltCli();
requireAgeTools();

const CREATED = '2026-01-02T03:04:05.000Z';
const ctx = (keyId: string, version: number) => ({ keyId, version, signal: new AbortController().signal });
const b64 = (b: Buffer) => b.toString('base64');

/** A local KEK file at `path` (made if missing) and its wrapper. */
async function localKek(path: string) {
  await ensureLocalKek(path);
  const uri = `local://${path}`;
  const wrapper = createWrapper(uri, { dataDir: resolve(path, '..'), settings: AdapterSettingsSchema.parse({ local: { enabled: true } }) });
  return { uri, wrapper };
}

/** What the source store holds: records by id, and every enabled version's DEK by `id@version`. */
interface Source {
  readonly url: string;
  readonly dir: string;
  readonly deks: Map<string, Buffer>;
  readonly records: Map<string, KeyRecord>;
  readonly identity: { file: string; recipient: string; secret: string };
  readonly oldKek: string;
}

/** How one version of a hand-made record is sealed: by kmsgw, by the `age` CLI, not at all, or to a stranger. */
type Seal = 'kmsgw' | 'age-cli' | 'none' | 'stranger' | 'other-dek' | 'destroyed';

/**
 * A file:// store written through FileBackend, as a gateway with `keys.recovery` would have left it: wrapped
 * under an old local KEK that is deleted afterwards, so nothing but the recovery copies can give the DEKs.
 */
async function makeSource(dir: string, layout: Record<string, Seal[]>): Promise<Source> {
  const identity = await ageKeygen(dir, 'recovery-identity.txt');
  const stranger = await ageKeygen(dir, 'stranger.txt');
  const old = await localKek(join(dir, 'old-kms', 'kek'));
  const storeDir = join(dir, 'store');
  const backend = await FileBackend.open(storeDir);
  const deks = new Map<string, Buffer>();
  const records = new Map<string, KeyRecord>();
  try {
    for (const [id, seals] of Object.entries(layout)) {
      const versions: VersionRecord[] = [];
      for (const [i, seal] of seals.entries()) {
        const version = i + 1;
        if (seal === 'destroyed') {
          versions.push({ version, wraps: [], commit: null, created: CREATED, state: 'destroyed', destroyed: CREATED });
          continue;
        }
        const dek = randomBytes(32);
        deks.set(`${id}@${version}`, dek);
        const wrapped = await old.wrapper.wrap(dek, ctx(id, version));
        const recovery =
          seal === 'kmsgw'
            ? await sealForRecovery(dek, [identity.recipient])
            : seal === 'age-cli'
              ? { recipients: [identity.recipient], sealed: (await age(['-e', '-a', '-r', identity.recipient], dek)).toString('utf8') }
              : seal === 'stranger'
                ? await sealForRecovery(dek, [stranger.recipient])
                : seal === 'other-dek'
                  ? await sealForRecovery(randomBytes(32), [identity.recipient])
                  : undefined;
        versions.push({
          version,
          wraps: [{ kek: old.uri, wrapped: b64(wrapped.blob) }],
          ...(version === 2 ? { pending: ['local://never-made'] } : {}),
          commit: b64(commitTag(dek, id, version)),
          ...(recovery === undefined ? {} : { recovery }),
          created: CREATED,
          state: 'enabled',
          encryptions: version * 10,
        });
      }
      const record: KeyRecord = { format: 2, id, created: CREATED, versions };
      records.set(id, record);
      expect((await backend.write(id, serialize(id, record), null)).ok).toBe(true);
    }
  } finally {
    await backend.close();
    await old.wrapper.close();
  }
  await rm(join(dir, 'old-kms'), { recursive: true }); // the old KMS is gone
  return { url: `file://${storeDir}`, dir: storeDir, deks, records, identity, oldKek: old.uri };
}

async function readRecord(storeDir: string, id: string): Promise<KeyRecord> {
  const backend = await FileBackend.open(storeDir, { readOnly: true });
  try {
    const got = await backend.read(id);
    if (got === undefined) throw new Error(`${id} is not in ${storeDir}`);
    return KeyRecordSchema.parse(JSON.parse(got.body.toString('utf8')));
  } finally {
    await backend.close();
  }
}

async function storeFiles(storeDir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of (await readdir(storeDir)).sort())
    if (name.endsWith('.json')) out.set(name, await readFile(join(storeDir, name), 'utf8'));
  return out;
}

/** Nothing secret in a run's output: no DEK (base64 or hex), no identity. */
function expectNoSecrets(run: Run, source: Source): void {
  const text = run.stdout + run.stderr;
  for (const dek of source.deks.values()) {
    expect(text).not.toContain(dek.toString('base64'));
    expect(text).not.toContain(dek.toString('hex'));
  }
  expect(text).not.toContain(source.identity.secret);
  expect(text).not.toContain('AGE-SECRET-KEY');
}

const summary = (recovered: number, records: number, destroyed: number, kept = 0, refused = 0, failed = 0) =>
  `recovered ${recovered} versions in ${records} records (${destroyed} destroyed versions copied); kept ${kept}, refused ${refused}, failed ${failed}\n`;

describe('kmsgw recover', () => {
  it('rebuilds every DEK from its recovery copy into a new store under a new KEK, with no other KMS', async () => {
    const dir = await tmp();
    const source = await makeSource(dir, {
      'pg/cluster-1/tde': ['destroyed', 'kmsgw', 'kmsgw'],
      'app:users.email': ['age-cli'],
      'a..b': ['kmsgw', 'destroyed'],
    });
    const sourceFiles = await storeFiles(source.dir);
    const fresh = await localKek(join(dir, 'new-kms', 'kek'));
    const outDir = join(dir, 'out');

    const run = await kmsgw(
      ['recover', '--identity', source.identity.file, '--store', source.url, '--out', `file://${outDir}`, '--kek', fresh.uri],
      { cwd: dir },
    );
    expect(run).toEqual({ code: 0, stdout: summary(4, 3, 2), stderr: '' });
    expectNoSecrets(run, source);
    expect(await storeFiles(source.dir)).toEqual(sourceFiles); // the source is only read

    for (const [id, original] of source.records) {
      const got = await readRecord(outDir, id);
      expect(got.id).toBe(id);
      expect(got.created).toBe(original.created);
      expect(got.versions.map((v) => v.version)).toEqual(original.versions.map((v) => v.version));
      for (const [i, v] of got.versions.entries()) {
        const was = original.versions[i] as VersionRecord;
        if (was.state === 'destroyed') {
          expect(v).toEqual(was);
          continue;
        }
        // One wrap, under the new KEK only; tag, recovery copy, counters kept; pending KEKs of the old set dropped.
        expect(v.wraps.map((w) => w.kek)).toEqual([fresh.uri]);
        expect(v).toEqual({ ...was, pending: undefined, wraps: v.wraps });
        expect('pending' in v).toBe(false);
        const dek = await fresh.wrapper.unwrap(
          { blob: Buffer.from((v.wraps[0] as { wrapped: string }).wrapped, 'base64') },
          ctx(id, v.version),
        );
        expect(dek.equals(source.deks.get(`${id}@${v.version}`) as Buffer)).toBe(true);
        // The recovery copy written still opens with the standard tool.
        const viaAge = await age(['-d', '-i', source.identity.file], v.recovery?.sealed as string);
        expect(viaAge.equals(dek)).toBe(true);
      }
    }
    await fresh.wrapper.close();

    // The new store passes `kmsgw store verify`'s reading of records and ids, and a second run refuses every id.
    const before = await storeFiles(outDir);
    const again = await kmsgw(
      ['recover', '--identity', source.identity.file, '--store', source.url, '--out', `file://${outDir}`, '--kek', fresh.uri],
      { cwd: dir },
    );
    expect(again.code).toBe(1);
    expect(again.stdout).toBe(summary(0, 0, 0, 0, 3, 0));
    expect(again.stderr.split('\n').filter(Boolean).sort()).toEqual(
      ['a..b', 'app:users.email', 'pg/cluster-1/tde'].map((id) => `refused ${id}: already in --out (recover writes create-only)`),
    );
    expect(await storeFiles(outDir)).toEqual(before);
  });

  it('writes versions it cannot rebuild with their old wraps, lists them on stderr, and exits 1', async () => {
    const dir = await tmp();
    const source = await makeSource(dir, {
      good: ['kmsgw'],
      mixed: ['none', 'kmsgw', 'stranger', 'other-dek'],
    });
    const fresh = await localKek(join(dir, 'new-kms', 'kek'));
    const outDir = join(dir, 'out');
    const run = await kmsgw(
      ['recover', '--identity', source.identity.file, '--store', source.url, '--out', `file://${outDir}`, '--kek', fresh.uri],
      { cwd: dir },
    );
    expect(run.code).toBe(1);
    expect(run.stdout).toBe(summary(2, 2, 0, 3));
    expect(run.stderr.split('\n').filter(Boolean)).toEqual([
      `kept mixed@1: no recovery copy; written with its old wraps (${source.oldKek})`,
      `kept mixed@3: the recovery copy is not sealed to any of the given identities; written with its old wraps (${source.oldKek})`,
      `kept mixed@4: the recovery copy does not match the commitment tag; written with its old wraps (${source.oldKek})`,
    ]);
    expectNoSecrets(run, source);
    const mixed = await readRecord(outDir, 'mixed');
    const was = source.records.get('mixed') as KeyRecord;
    for (const n of [1, 3, 4]) expect(mixed.versions[n - 1]).toEqual(was.versions[n - 1]); // as they were, old wraps and all
    expect(mixed.versions[1]?.wraps.map((w) => w.kek)).toEqual([fresh.uri]);
    expect((await readRecord(outDir, 'good')).versions[0]?.wraps.map((w) => w.kek)).toEqual([fresh.uri]);
    await fresh.wrapper.close();
  });

  it('recovers only the --id ids, reports an id the source lacks, and reads the identity from stdin with --identity -', async () => {
    const dir = await tmp();
    const source = await makeSource(dir, { one: ['kmsgw'], two: ['kmsgw'], three: ['kmsgw'] });
    const fresh = await localKek(join(dir, 'new-kms', 'kek'));
    const outDir = join(dir, 'out');
    const args = ['recover', '--identity', '-', '--store', source.url, '--out', `file://${outDir}`, '--kek', fresh.uri];
    const run = await kmsgw([...args, '--id', 'three', 'missing', '--id', 'one'], {
      cwd: dir,
      input: await readFile(source.identity.file),
    });
    expect(run.code).toBe(1);
    expect(run.stdout).toBe(summary(2, 2, 0, 0, 0, 1));
    expect(run.stderr).toBe('failed missing: not in the source store\n');
    expect([...(await storeFiles(outDir)).keys()]).toEqual(['one.json', 'three.json']);
    await fresh.wrapper.close();
  });

  it('stops before writing anything when --kek cannot wrap, and refuses bad usage with exit 2', async () => {
    const dir = await tmp();
    const source = await makeSource(dir, { one: ['kmsgw'] });
    const outDir = join(dir, 'out');
    const base = ['recover', '--identity', source.identity.file, '--store', source.url, '--out', `file://${outDir}`];

    const missingKek = await kmsgw([...base, '--kek', `local://${join(dir, 'nowhere', 'kek')}`], { cwd: dir });
    expect(missingKek.code).toBe(1);
    expect(missingKek.stderr).toContain(
      `--kek local://${join(dir, 'nowhere', 'kek')} cannot wrap and unwrap: KMS_DENIED local KEK file not found`,
    );
    expect(await storeFiles(outDir)).toEqual(new Map());

    const kek = `local://${join(dir, 'new', 'kek')}`;
    await mkdir(join(dir, 'new'));
    await writeFile(join(dir, 'new', 'kek'), randomBytes(32));
    const usage: Array<[string[], RegExp]> = [
      [
        ['recover', '--identity', source.identity.file, '--store', source.url, '--out', source.url, '--kek', kek],
        /--store and --out are the same store/,
      ],
      [[...base, '--kek', 'nope://x'], /--kek: no KEK adapter for scheme nope/],
      [
        ['recover', '--identity', join(dir, 'absent.txt'), '--store', source.url, '--out', `file://${outDir}`, '--kek', kek],
        /--identity .*absent\.txt: no such file/,
      ],
      [[...base.slice(0, 5), '--kek', kek], /required option '--out <url>' not specified/],
    ];
    for (const [args, message] of usage) {
      const r = await kmsgw(args, { cwd: dir });
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
    }
    const notAnIdentity = join(dir, 'public-only.txt');
    await writeFile(notAnIdentity, `# public key: ${source.identity.recipient}\n${source.identity.recipient}\n`);
    const r = await kmsgw(['recover', '--identity', notAnIdentity, '--store', source.url, '--out', `file://${outDir}`, '--kek', kek], {
      cwd: dir,
    });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`kmsgw: --identity ${notAnIdentity}: identity 1 is not an age identity (AGE-SECRET-KEY-1…)\n`);
  });
});
