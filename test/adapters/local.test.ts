import { mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import local, { LocalWrapper, confinedKekPath, ensureLocalKek, localKekPath } from '../../adapters/local/index.js';
import { AdapterSettingsSchema } from '../../adapters/settings.js';
import { GatewayError } from '../../src/protocol/errors.js';
import { mkfifo, releaseFifoReaders } from '../helpers/fifo.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { describeKeyWrapperConformance } from './conformance.js';

const tmp = useTmpDirs();

describeKeyWrapperConformance('local KEK file', {
  scheme: 'local',
  module: local,
  target: {
    // Every KEK below is made in a folder under the system's temporary folder.
    adapters: { local: { enabled: true, dir: tmpdir() } },
    // An absolute local:/// URI, so the adapter and the gateway find the same file.
    newKek: async () => {
      const path = join(await tmp(), 'kek');
      await ensureLocalKek(path);
      return { uri: `local://${path}` };
    },
  },
  generates: false,
  bindsContext: true,
  movedBlobReply: 'ERR DECRYPT_FAILED wrapped key failed authentication under the local KEK',
});
const ctx = (keyId: string, version: number) => ({ keyId, version, signal: new AbortController().signal });

/** Adapter options with local KEKs enabled (confined to `dataDir` unless `dir` is given). */
const enabledIn = (dataDir: string, dir?: string) => ({
  dataDir,
  settings: AdapterSettingsSchema.parse({ local: { enabled: true, ...(dir === undefined ? {} : { dir }) } }),
});

async function wrapperIn(dir: string) {
  await ensureLocalKek(join(dir, 'local-kek'));
  return new LocalWrapper('local://local-kek', enabledIn(dir));
}

describe('local KEK adapter', () => {
  it('resolves relative paths in the data folder and absolute ones as given', () => {
    expect(localKekPath('local://local-kek', '/data')).toBe('/data/local-kek');
    expect(localKekPath('local:///etc/kmsgw/kek', '/data')).toBe('/etc/kmsgw/kek');
    expect(() => localKekPath('local://', '/data')).toThrow(GatewayError);
  });

  it('creates a 32-byte KEK with mode 0600 once, and never replaces it', async () => {
    const dir = await tmp();
    const path = join(dir, 'sub', 'kek');
    expect(await ensureLocalKek(path)).toBe(true);
    const first = await readFile(path);
    expect(first).toHaveLength(32);
    expect(first.equals(Buffer.alloc(32))).toBe(false);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await ensureLocalKek(path)).toBe(false);
    expect((await readFile(path)).equals(first)).toBe(true);
  });

  it('round-trips a DEK and binds the blob to key id and version', async () => {
    const dir = await tmp();
    const w = await wrapperIn(dir);
    const dek = Buffer.alloc(32, 7);
    const { blob } = await w.wrap(dek, ctx('a', 1));
    expect(blob.includes(dek)).toBe(false);
    expect((await w.unwrap({ blob }, ctx('a', 1))).equals(dek)).toBe(true);
    await expect(w.unwrap({ blob }, ctx('b', 1))).rejects.toMatchObject({ code: 'DECRYPT_FAILED' });
    await expect(w.unwrap({ blob }, ctx('a', 2))).rejects.toMatchObject({ code: 'DECRYPT_FAILED' });
    const tampered = Buffer.from(blob);
    tampered[20] = (tampered[20] as number) ^ 1;
    await expect(w.unwrap({ blob: tampered }, ctx('a', 1))).rejects.toMatchObject({ code: 'DECRYPT_FAILED' });
    await expect(w.unwrap({ blob: blob.subarray(0, 10) }, ctx('a', 1))).rejects.toMatchObject({ code: 'DECRYPT_FAILED' });
    await w.close();
  });

  it('a blob wrapped under one KEK does not unwrap under another', async () => {
    const a = await wrapperIn(await tmp());
    const b = await wrapperIn(await tmp());
    const { blob } = await a.wrap(Buffer.alloc(32, 1), ctx('k', 1));
    await expect(b.unwrap({ blob }, ctx('k', 1))).rejects.toMatchObject({ code: 'DECRYPT_FAILED' });
  });

  it('close() drops the KEK it read: after it, a removed file is KMS_DENIED', async () => {
    const dir = await tmp();
    const w = await wrapperIn(dir);
    const { blob } = await w.wrap(Buffer.alloc(32, 5), ctx('k', 1));
    await rm(join(dir, 'local-kek'));
    // Still held in memory until close().
    expect((await w.unwrap({ blob }, ctx('k', 1))).equals(Buffer.alloc(32, 5))).toBe(true);
    await w.close();
    await expect(w.unwrap({ blob }, ctx('k', 1))).rejects.toMatchObject({ code: 'KMS_DENIED', message: 'local KEK file not found' });
  });

  it('a missing or malformed KEK file is KMS_DENIED, and fixing the file needs no restart', async () => {
    const dir = await tmp();
    const w = new LocalWrapper('local://missing', enabledIn(dir));
    await expect(w.wrap(Buffer.alloc(32), ctx('k', 1))).rejects.toMatchObject({ code: 'KMS_DENIED', message: 'local KEK file not found' });
    await writeFile(join(dir, 'missing'), Buffer.alloc(16, 1));
    await expect(w.wrap(Buffer.alloc(32), ctx('k', 1))).rejects.toMatchObject({ code: 'KMS_DENIED' });
    await writeFile(join(dir, 'missing'), Buffer.alloc(32, 1));
    await expect(w.wrap(Buffer.alloc(32), ctx('k', 1))).resolves.toHaveProperty('blob');
  });
});

describe('local KEK adapter: off unless enabled, confined to one folder', () => {
  it('is off by default: every local:// URI is KMS_DENIED before any file is touched', async () => {
    const dir = await tmp();
    await ensureLocalKek(join(dir, 'local-kek'));
    for (const options of [{ dataDir: dir }, { dataDir: dir, settings: AdapterSettingsSchema.parse({}) }]) {
      expect(() => local.createWrapper('local://local-kek', options)).toThrow(
        expect.objectContaining({ code: 'KMS_DENIED', message: 'local KEKs are disabled on this gateway' }),
      );
    }
  });

  it('refuses paths outside the allowed folder (relative or absolute), whatever the spelling', async () => {
    const root = await tmp();
    const data = join(root, 'data');
    await ensureLocalKek(join(root, 'x.kek'));
    await ensureLocalKek(join(data, 'local-kek'));
    for (const uri of [
      'local://../x.kek',
      'local://../../x.kek',
      'local://sub/../../x.kek',
      `local://${root}/x.kek`,
      'local:///etc/passwd',
    ]) {
      expect(() => local.createWrapper(uri, enabledIn(data)), uri).toThrow(
        expect.objectContaining({ code: 'KMS_DENIED', message: 'local KEK file is outside the allowed folder' }),
      );
    }
    expect(confinedKekPath('local://sub/../local-kek', enabledIn(data))).toEqual({ path: join(data, 'local-kek'), dir: data });
    expect(confinedKekPath(`local://${root}/x.kek`, enabledIn(data, root))).toEqual({ path: join(root, 'x.kek'), dir: root });
    // Inside it, relative and absolute spellings work; `dir` widens the folder.
    for (const uri of ['local://local-kek', 'local://./sub/../local-kek', `local://${data}/local-kek`]) {
      await expect(local.createWrapper(uri, enabledIn(data)).wrap(Buffer.alloc(32), ctx('k', 1)), uri).resolves.toHaveProperty('blob');
    }
    await expect(
      local.createWrapper(`local://${root}/x.kek`, enabledIn(data, root)).wrap(Buffer.alloc(32), ctx('k', 1)),
    ).resolves.toHaveProperty('blob');
  });

  it('refuses a file whose real path leaves the folder through a symlink', async () => {
    const root = await tmp();
    const data = join(root, 'data');
    await ensureLocalKek(join(root, 'outside.kek'));
    await ensureLocalKek(join(data, 'inside.kek'));
    await symlink(join(root, 'outside.kek'), join(data, 'link.kek'));
    await symlink(root, join(data, 'up'));
    await symlink(join(data, 'inside.kek'), join(data, 'alias.kek'));
    for (const uri of ['local://link.kek', 'local://up/outside.kek']) {
      await expect(local.createWrapper(uri, enabledIn(data)).wrap(Buffer.alloc(32), ctx('k', 1)), uri).rejects.toMatchObject({
        code: 'KMS_DENIED',
        message: 'local KEK file is outside the allowed folder',
      });
    }
    // A symlink that stays inside is followed.
    await expect(local.createWrapper('local://alias.kek', enabledIn(data)).wrap(Buffer.alloc(32), ctx('k', 1))).resolves.toHaveProperty(
      'blob',
    );
  });

  it('refuses a FIFO, a folder and a file of another size at once, blocking no file-I/O thread', async () => {
    const dir = await tmp();
    const fifo = join(dir, 'fifo');
    mkfifo(fifo);
    await mkdir(join(dir, 'folder'));
    await writeFile(join(dir, 'big'), Buffer.alloc(33, 1));
    try {
      for (const uri of ['local://fifo', 'local://folder', 'local://big']) {
        const started = performance.now();
        const settled = await Promise.race([
          local
            .createWrapper(uri, enabledIn(dir))
            .wrap(Buffer.alloc(32), ctx('k', 1))
            .then(
              () => 'wrapped',
              (err: unknown) => err,
            ),
          new Promise((resolve) => setTimeout(() => resolve('no answer within 2 s'), 2000)),
        ]);
        expect(settled, uri).toMatchObject({ code: 'KMS_DENIED', message: 'local KEK must be a regular file of exactly 32 bytes' });
        expect(performance.now() - started).toBeLessThan(1000);
      }
    } finally {
      releaseFifoReaders(fifo);
    }
  });
});
