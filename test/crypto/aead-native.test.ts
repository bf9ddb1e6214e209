// native/aesgcm.c against Node's own AES-256-GCM: the documented vectors, a seeded fuzz over
// sizes, ids, versions and AADs in both directions, tampering, and release. The addon must be
// built (.ci/run installs the OpenSSL headers): a missing one fails here instead of skipping.
import { createCipheriv } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { nativeKeyFor, registerDek, releaseDek } from '../../src/crypto/aead.js';
import { open, seal, type SealParams } from '../../src/crypto/envelope.js';
import { loadAesGcm } from '../../src/native/aesgcm.js';
import { GatewayError } from '../../src/protocol/errors.js';
import { prng } from '../helpers/prng.js';

const seq = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => i));

/** A DEK as the cache holds it: registered, so seal/open take the native path. */
function cached(dek: Buffer, keyId: string, version: number): Buffer {
  const copy = Buffer.alloc(32);
  dek.copy(copy);
  registerDek(copy, keyId, version);
  return copy;
}

describe('native AES-256-GCM (native/aesgcm.c)', () => {
  it('is built and loads', () => {
    expect(loadAesGcm(), 'build/aesgcm.node: run npm run build with OpenSSL headers (Debian libssl-dev)').not.toBeNull();
  });

  it('gives the documented envelope vectors', () => {
    const dek = cached(seq(32), 'demo/key', 1);
    const params: SealParams = { dek, keyId: 'demo/key', version: 1 };
    expect(seal({ ...params, aad: Buffer.from('row:42') }, Buffer.from('hello, kmsgw'), new Uint8Array(seq(12))).toString('base64')).toBe(
      'AQAAAAEAAQIDBAUGBwgJCgsvZ7p3qsnicOAy8PzIWgDZN9DKEBUHmeLYH4D+',
    );
    expect(seal(params, Buffer.from('hello, kmsgw'), new Uint8Array(seq(12))).toString('base64')).toBe(
      'AQAAAAEAAQIDBAUGBwgJCgsvZ7p3qsnicOAy8PyspF3g/dNvAzwtL8omHtD9',
    );
    expect(nativeKeyFor(dek, 'demo/key', 1, () => Buffer.alloc(0))).toBeDefined();
    releaseDek(dek);
  });

  it('fuzz: byte-identical to node:crypto both ways, for random sizes, ids, versions and AADs', () => {
    const rand = prng(0x6a65);
    const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(rand() * 256)));
    for (let i = 0; i < 400; i++) {
      const dek = bytes(32);
      const keyId = `k/${Math.floor(rand() * 1e6)}`;
      const version = 1 + Math.floor(rand() * 0xfffffffe);
      const size = [0, 1, 15, 16, 17, 31, 32, 33, 255, 4096, 65537][i % 11] as number;
      const plaintext = bytes(size);
      const aad = rand() < 0.5 ? undefined : bytes(Math.floor(rand() * 64));
      const nonce = new Uint8Array(bytes(12));
      const native = cached(dek, keyId, version);
      const base: SealParams = aad === undefined ? { dek, keyId, version } : { dek, keyId, version, aad };
      const viaNative = { ...base, dek: native };
      const a = seal(viaNative, plaintext, nonce);
      const b = seal(base, plaintext, nonce);
      expect(a.equals(b), `case ${i}`).toBe(true);
      expect(open(base, a).equals(plaintext)).toBe(true);
      expect(open(viaNative, b).equals(plaintext)).toBe(true);
      releaseDek(native);
    }
  });

  it('refuses a tampered envelope, another AAD, key id or version, with DECRYPT_FAILED', () => {
    const dek = cached(seq(32), 'a', 1);
    const env = seal({ dek, keyId: 'a', version: 1, aad: Buffer.from('x') }, Buffer.from('secret'), new Uint8Array(12));
    const refused = (params: SealParams, e: Buffer) => {
      try {
        open(params, e);
      } catch (err) {
        return err instanceof GatewayError && err.code === 'DECRYPT_FAILED';
      }
      return false;
    };
    for (let at = 0; at < env.length; at++) {
      if (at >= 1 && at < 5) continue; // the version bytes are checked before decryption
      const bad = Buffer.from(env);
      bad[at] = (bad[at] as number) ^ 1;
      expect(refused({ dek, keyId: 'a', version: 1, aad: Buffer.from('x') }, bad), `byte ${at}`).toBe(true);
    }
    expect(refused({ dek, keyId: 'a', version: 1 }, env)).toBe(true);
    expect(refused({ dek, keyId: 'a', version: 1, aad: Buffer.from('y') }, env)).toBe(true);
    const other = cached(seq(32), 'b', 1);
    expect(refused({ dek: other, keyId: 'b', version: 1, aad: Buffer.from('x') }, env)).toBe(true);
    releaseDek(dek);
    releaseDek(other);
  });

  it('a released key is never used again: seal falls back to node:crypto, and the addon refuses the handle', () => {
    const dek = cached(seq(32), 'r', 1);
    const key = nativeKeyFor(dek, 'r', 1, () => Buffer.from('kmsgw/v1 r 1'));
    expect(key).toBeDefined();
    releaseDek(dek);
    expect(nativeKeyFor(dek, 'r', 1, () => Buffer.alloc(0))).toBeUndefined();
    const out = Buffer.alloc(17 + 1 + 16);
    expect(() => loadAesGcm()?.seal(key as object, out, Buffer.from('x'))).toThrow(/seal/);
    // A DEK the cache registered for another key id or version is not given that key's contexts.
    const again = cached(seq(32), 'r', 1);
    expect(nativeKeyFor(again, 'r', 2, () => Buffer.alloc(0))).toBeUndefined();
    expect(nativeKeyFor(again, 's', 1, () => Buffer.alloc(0))).toBeUndefined();
    releaseDek(again);
  });

  it('matches an independent AES-GCM over the documented AAD layout', () => {
    const dek = cached(seq(32), 'demo/key', 7);
    const nonce = seq(12);
    const env = seal({ dek, keyId: 'demo/key', version: 7 }, Buffer.from('abc'), new Uint8Array(nonce));
    const c = createCipheriv('aes-256-gcm', seq(32), nonce);
    c.setAAD(Buffer.from('kmsgw/v1 demo/key 7'));
    const body = Buffer.concat([c.update(Buffer.from('abc')), c.final(), c.getAuthTag()]);
    expect(env.subarray(17).equals(body)).toBe(true);
    releaseDek(dek);
  });
});
