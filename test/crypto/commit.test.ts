import { createHmac, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { commitTag, verifyCommitTag } from '../../src/crypto/commit.js';

const seq = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => i));

/** Independent computation of the documented commitment. */
function reference(dek: Buffer, keyId: string, version: number): Buffer {
  return createHmac('sha256', dek)
    .update(Buffer.from(`kmsgw/v1 commit ${keyId} ${version}`, 'ascii'))
    .digest();
}

describe('commitTag', () => {
  const dek = seq(32);
  // HMAC-SHA256(key = 000102..1f, "kmsgw/v1 commit demo/key 1")
  const VECTOR = '12a6aeb96114601eef84d1a3795ca4718b8a281a034ddc02624cee7b2647361c';

  it('matches the hard-coded vector for DEK 00..1f, demo/key, version 1', () => {
    expect(dek.toString('hex')).toBe('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
    expect(commitTag(dek, 'demo/key', 1).toString('hex')).toBe(VECTOR);
  });

  it('the vector is HMAC-SHA256 over the documented message', () => {
    expect(reference(dek, 'demo/key', 1).toString('hex')).toBe(VECTOR);
  });

  it.each<[string, number]>([
    ['demo/key', 2],
    ['k', 1],
    ['tenant/a.b_c-d:e', 4294967295],
    ['x'.repeat(256), 123456789],
  ])('matches an independent HMAC for %s @%d', (keyId, version) => {
    for (const key of [dek, randomBytes(32), Buffer.alloc(32)]) {
      const tag = commitTag(key, keyId, version);
      expect(tag).toHaveLength(32);
      expect(tag.equals(reference(key, keyId, version))).toBe(true);
    }
  });

  it('differs for every input change, including id/version boundary shifts', () => {
    const base = commitTag(dek, 'demo/key', 11).toString('hex');
    const others = [
      commitTag(dek, 'demo/key1', 1),
      commitTag(dek, 'demo/key', 1),
      commitTag(dek, 'demo/kez', 11),
      commitTag(Buffer.from(dek.map((b, i) => (i === 0 ? b ^ 1 : b))), 'demo/key', 11),
    ].map((t) => t.toString('hex'));
    for (const other of others) expect(other).not.toBe(base);
    expect(new Set(others).size).toBe(others.length);
  });

  it('does not change the DEK', () => {
    const key = randomBytes(32);
    const copy = Buffer.from(key);
    commitTag(key, 'k', 1);
    verifyCommitTag(key, 'k', 1, Buffer.alloc(32));
    expect(key.equals(copy)).toBe(true);
  });
});

describe('verifyCommitTag', () => {
  const dek = randomBytes(32);
  const tag = commitTag(dek, 'demo/key', 7);

  it('accepts the right tag', () => {
    expect(verifyCommitTag(dek, 'demo/key', 7, tag)).toBe(true);
    expect(verifyCommitTag(dek, 'demo/key', 7, Buffer.from(tag))).toBe(true);
  });

  it('refuses another key id', () => {
    expect(verifyCommitTag(dek, 'demo/kez', 7, tag)).toBe(false);
    expect(verifyCommitTag(dek, 'demo/key2', 7, tag)).toBe(false);
    expect(verifyCommitTag(dek, 'demo/ke', 7, tag)).toBe(false);
  });

  it('refuses another version', () => {
    for (const version of [1, 6, 8, 70, 4294967295]) {
      expect(verifyCommitTag(dek, 'demo/key', version, tag), `version ${version}`).toBe(false);
    }
  });

  it('refuses another DEK', () => {
    for (let i = 0; i < 32; i++) {
      const other = Buffer.from(dek);
      other[i] = (other[i] as number) ^ 0x80;
      expect(verifyCommitTag(other, 'demo/key', 7, tag), `DEK byte ${i}`).toBe(false);
    }
    expect(verifyCommitTag(randomBytes(32), 'demo/key', 7, tag)).toBe(false);
  });

  it('refuses a tag with any single byte changed', () => {
    for (let i = 0; i < tag.length; i++) {
      const bad = Buffer.from(tag);
      bad[i] = (bad[i] as number) ^ 0x01;
      expect(verifyCommitTag(dek, 'demo/key', 7, bad), `tag byte ${i}`).toBe(false);
    }
  });

  it('refuses wrong-length tags without throwing', () => {
    for (const bad of [
      Buffer.alloc(0),
      tag.subarray(0, 16),
      tag.subarray(0, 31),
      Buffer.concat([tag, Buffer.alloc(1)]),
      Buffer.concat([tag, tag]),
    ]) {
      expect(() => verifyCommitTag(dek, 'demo/key', 7, bad)).not.toThrow();
      expect(verifyCommitTag(dek, 'demo/key', 7, bad), `length ${bad.length}`).toBe(false);
    }
  });

  it('refuses the tag of another (id, version) under the same DEK', () => {
    expect(verifyCommitTag(dek, 'demo/key', 7, commitTag(dek, 'demo/key', 8))).toBe(false);
    expect(verifyCommitTag(dek, 'demo/key', 7, commitTag(dek, 'other', 7))).toBe(false);
  });
});
