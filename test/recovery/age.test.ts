import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RecoverySchema } from '../../src/keystore/types.js';
import { openRecovery, parseIdentityFile, sealForRecovery } from '../../src/recovery/age.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { age, ageKeygen, requireAgeTools } from './age-cli.js';

const tmp = useTmpDirs();
requireAgeTools();

const ARMOR_BEGIN = '-----BEGIN AGE ENCRYPTED FILE-----\n';

describe('sealForRecovery / openRecovery', () => {
  it('seals a DEK to every recipient as an armored age file that each identity opens, leaving the DEK as it was', async () => {
    const dir = await tmp();
    const [a, b] = [await ageKeygen(dir, 'a'), await ageKeygen(dir, 'b')];
    const dek = randomBytes(32);
    const before = Buffer.from(dek);

    const recovery = await sealForRecovery(dek, [a.recipient, b.recipient]);
    expect(RecoverySchema.parse(recovery)).toEqual(recovery);
    expect(recovery.recipients).toEqual([a.recipient, b.recipient]);
    expect(recovery.sealed.startsWith(ARMOR_BEGIN)).toBe(true);
    expect(recovery.sealed.trimEnd().endsWith('-----END AGE ENCRYPTED FILE-----')).toBe(true);
    expect(dek.equals(before)).toBe(true);

    for (const identity of [a.secret, b.secret]) {
      const opened = await openRecovery(recovery.sealed, [identity]);
      expect(opened.equals(dek)).toBe(true);
      // Its own Buffer.alloc memory, not a view of the library's or the pool's.
      expect([opened.byteOffset, opened.buffer.byteLength]).toEqual([0, 32]);
    }
    // Any one matching identity among several is enough.
    const other = await ageKeygen(dir, 'other');
    expect((await openRecovery(recovery.sealed, [other.secret, b.secret])).equals(dek)).toBe(true);
    // Each seal is a fresh age file (new file key and ephemeral share).
    expect((await sealForRecovery(dek, [a.recipient])).sealed).not.toBe((await sealForRecovery(dek, [a.recipient])).sealed);
  });

  it('is read by the age command line: `age -d -i identity` prints the 32-byte DEK', async () => {
    const dir = await tmp();
    const id = await ageKeygen(dir);
    const dek = randomBytes(32);
    const { sealed } = await sealForRecovery(dek, [id.recipient]);
    const sealedFile = join(dir, 'dek.age');
    await writeFile(sealedFile, sealed);
    expect((await age(['-d', '-i', id.file, sealedFile], '')).equals(dek)).toBe(true);
    expect((await age(['-d', '-i', id.file], sealed)).equals(dek)).toBe(true); // from stdin too
    const stranger = await ageKeygen(dir, 'stranger');
    await expect(age(['-d', '-i', stranger.file, sealedFile], '')).rejects.toThrow(/no identity matched/);
  });

  it('opens a file made by `age -e -a -r`, and refuses one whose plaintext is not 32 bytes', async () => {
    const dir = await tmp();
    const id = await ageKeygen(dir);
    const dek = randomBytes(32);
    const made = (await age(['-e', '-a', '-r', id.recipient], dek)).toString('utf8');
    expect(made.startsWith(ARMOR_BEGIN)).toBe(true);
    expect((await openRecovery(made, parseIdentityFile(await readText(id.file)))).equals(dek)).toBe(true);

    for (const size of [0, 31, 33, 64]) {
      const wrongSize = (await age(['-e', '-a', '-r', id.recipient], randomBytes(size))).toString('utf8');
      await expect(openRecovery(wrongSize, [id.secret])).rejects.toMatchObject({
        code: 'DECRYPT_FAILED',
        message: `the recovery copy holds ${size} bytes, not a 32-byte DEK`,
      });
    }
  });

  it('refuses another identity, a damaged file and text that is not an age file with DECRYPT_FAILED, quoting no secret', async () => {
    const dir = await tmp();
    const [id, stranger] = [await ageKeygen(dir, 'id'), await ageKeygen(dir, 'stranger')];
    const { sealed } = await sealForRecovery(randomBytes(32), [id.recipient]);

    const unmatched = await openRecovery(sealed, [stranger.secret]).catch((e: unknown) => e);
    expect(unmatched).toMatchObject({ code: 'DECRYPT_FAILED', message: 'the recovery copy is not sealed to any of the given identities' });
    expect(JSON.stringify(unmatched, Object.getOwnPropertyNames(unmatched))).not.toContain(stranger.secret);

    // One base64 character of the payload changed: the header MAC or the payload tag fails.
    const lines = sealed.split('\n');
    const last = lines.length - 3; // the final base64 line (then the END line and '')
    const line = lines[last] as string;
    lines[last] = (line[0] === 'A' ? 'B' : 'A') + line.slice(1);
    await expect(openRecovery(lines.join('\n'), [id.secret])).rejects.toMatchObject({ code: 'DECRYPT_FAILED' });

    await expect(openRecovery('not an age file', [id.secret])).rejects.toMatchObject({
      code: 'DECRYPT_FAILED',
      message: 'the recovery copy is not an armored age file',
    });
  });

  it('refuses malformed recipients, identities and DEKs with BAD_REQUEST / INTERNAL, naming positions only', async () => {
    const dir = await tmp();
    const id = await ageKeygen(dir);
    const dek = randomBytes(32);
    await expect(sealForRecovery(dek, [])).rejects.toMatchObject({ code: 'BAD_REQUEST' });
    await expect(sealForRecovery(dek, [id.recipient, 'age1notarecipient'])).rejects.toMatchObject({
      code: 'BAD_REQUEST',
      message: 'recovery recipient 2 is not an age X25519 recipient (age1…)',
    });
    await expect(sealForRecovery(randomBytes(16), [id.recipient])).rejects.toMatchObject({ code: 'INTERNAL' });

    const { sealed } = await sealForRecovery(dek, [id.recipient]);
    const broken = `${id.secret.slice(0, -4)}QQQQ`; // a checksum failure, which Bech32 errors may quote
    const err = await openRecovery(sealed, [id.secret, broken]).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BAD_REQUEST', message: 'identity 2 is not an age identity (AGE-SECRET-KEY-1…)' });
    expect((err as Error).cause).toBeUndefined();
    await expect(openRecovery(sealed, [])).rejects.toMatchObject({ code: 'BAD_REQUEST' });
  });
});

describe('parseIdentityFile', () => {
  it("reads age-keygen's file (comments skipped) and several identities; refuses one with none", async () => {
    const dir = await tmp();
    const [a, b] = [await ageKeygen(dir, 'a'), await ageKeygen(dir, 'b')];
    expect(parseIdentityFile(await readText(a.file))).toEqual([a.secret]);
    const both = `${await readText(a.file)}\r\n\n${await readText(b.file)}`;
    expect(parseIdentityFile(both)).toEqual([a.secret, b.secret]);
    expect(() => parseIdentityFile('# public key: only a comment\n\n')).toThrow(/holds no age identity/);
    expect(() => parseIdentityFile('AGE-SECRET-KEY-1XYZ\n')).toThrow(/identity 1 is not an age identity/);
  });
});

const readText = (file: string): Promise<string> => readFile(file, 'utf8');
