import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import local, { LocalWrapper, ensureLocalKek, localKekPath } from '../../adapters/local/index.js';
import { GatewayError } from '../../src/protocol/errors.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { describeKeyWrapperConformance } from './conformance.js';

const tmp = useTmpDirs();

describeKeyWrapperConformance('local KEK file', {
  scheme: 'local',
  module: local,
  target: {
    adapters: {},
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

async function wrapperIn(dir: string) {
  await ensureLocalKek(join(dir, 'local-kek'));
  return new LocalWrapper('local://local-kek', { dataDir: dir });
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
    const w = new LocalWrapper('local://missing', { dataDir: dir });
    await expect(w.wrap(Buffer.alloc(32), ctx('k', 1))).rejects.toMatchObject({ code: 'KMS_DENIED', message: 'local KEK file not found' });
    await writeFile(join(dir, 'missing'), Buffer.alloc(16, 1));
    await expect(w.wrap(Buffer.alloc(32), ctx('k', 1))).rejects.toMatchObject({ code: 'KMS_DENIED' });
    await writeFile(join(dir, 'missing'), Buffer.alloc(32, 1));
    await expect(w.wrap(Buffer.alloc(32), ctx('k', 1))).resolves.toHaveProperty('blob');
  });
});
