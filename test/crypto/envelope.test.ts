import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  ENVELOPE_HEADER_BYTES,
  ENVELOPE_MIN_BYTES,
  ENVELOPE_V1,
  TAG_BYTES,
  envelopeAad,
  envelopeVersion,
  open,
  seal,
  type SealParams,
} from '../../src/crypto/envelope.js';
import { NONCE_BYTES, NoncePool } from '../../src/crypto/nonce.js';
import { GatewayError } from '../../src/protocol/errors.js';

const seq = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => i));

function expectDecryptFailed(fn: () => unknown, label = ''): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  if (!(thrown instanceof GatewayError)) expect.fail(`${label}: expected GatewayError, got ${String(thrown)}`);
  expect(thrown.code, label).toBe('DECRYPT_FAILED');
}

/** Independent AES-256-GCM envelope, built by hand from the documented format. */
function referenceEnvelope(dek: Buffer, keyId: string, version: number, nonce: Buffer, plaintext: Buffer, callerAad?: Buffer): Buffer {
  const base = Buffer.from(`kmsgw/v1 ${keyId} ${version}`, 'ascii');
  const aad = callerAad === undefined ? base : Buffer.concat([base, Buffer.from([0x00]), callerAad]);
  const cipher = createCipheriv('aes-256-gcm', dek, nonce, { authTagLength: 16 });
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const header = Buffer.alloc(5);
  header[0] = 0x01;
  header.writeUInt32BE(version, 1);
  return Buffer.concat([header, nonce, body, cipher.getAuthTag()]);
}

describe('envelope constants', () => {
  it('match the v1 layout', () => {
    expect(ENVELOPE_V1).toBe(0x01);
    expect(NONCE_BYTES).toBe(12);
    expect(ENVELOPE_HEADER_BYTES).toBe(17);
    expect(TAG_BYTES).toBe(16);
    expect(ENVELOPE_MIN_BYTES).toBe(33);
  });
});

describe('envelope fixed test vectors', () => {
  // DEK 000102..1f, key id "demo/key", version 1, nonce 000102..0b, plaintext "hello, kmsgw".
  const dek = seq(32);
  const nonce = seq(12);
  const plaintext = Buffer.from('hello, kmsgw', 'ascii');
  const callerAad = Buffer.from('row:42', 'ascii');

  const WITH_AAD = 'AQAAAAEAAQIDBAUGBwgJCgsvZ7p3qsnicOAy8PzIWgDZN9DKEBUHmeLYH4D+';
  const WITHOUT_AAD = 'AQAAAAEAAQIDBAUGBwgJCgsvZ7p3qsnicOAy8PyspF3g/dNvAzwtL8omHtD9';

  it('inputs are what the documentation says', () => {
    expect(dek.toString('hex')).toBe('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
    expect(nonce.toString('hex')).toBe('000102030405060708090a0b');
    expect(plaintext.toString('hex')).toBe('68656c6c6f2c206b6d736777');
    expect(callerAad.toString('hex')).toBe('726f773a3432');
  });

  it('with caller AAD "row:42": independent computation equals the hard-coded vector', () => {
    expect(referenceEnvelope(dek, 'demo/key', 1, nonce, plaintext, callerAad).toString('base64')).toBe(WITH_AAD);
  });

  it('with caller AAD "row:42": seal() produces it and open() reverses it', () => {
    const params: SealParams = { dek, keyId: 'demo/key', version: 1, aad: new Uint8Array(callerAad) };
    const envelope = seal(params, plaintext, new Uint8Array(nonce));
    expect(envelope.toString('base64')).toBe(WITH_AAD);
    expect(open(params, Buffer.from(WITH_AAD, 'base64')).toString('ascii')).toBe('hello, kmsgw');
  });

  it('without caller AAD: independent computation equals the hard-coded vector', () => {
    expect(referenceEnvelope(dek, 'demo/key', 1, nonce, plaintext).toString('base64')).toBe(WITHOUT_AAD);
  });

  it('without caller AAD: seal() produces it and open() reverses it', () => {
    const params: SealParams = { dek, keyId: 'demo/key', version: 1 };
    expect(seal(params, plaintext, new Uint8Array(nonce)).toString('base64')).toBe(WITHOUT_AAD);
    expect(open(params, Buffer.from(WITHOUT_AAD, 'base64')).toString('ascii')).toBe('hello, kmsgw');
  });

  it('the two vectors are not interchangeable', () => {
    expectDecryptFailed(() => open({ dek, keyId: 'demo/key', version: 1 }, Buffer.from(WITH_AAD, 'base64')));
    expectDecryptFailed(() => open({ dek, keyId: 'demo/key', version: 1, aad: callerAad }, Buffer.from(WITHOUT_AAD, 'base64')));
  });

  it('refuses a nonce source that is not exactly 12 bytes', () => {
    const params: SealParams = { dek, keyId: 'demo/key', version: 1 };
    expect(() => seal(params, plaintext, new Uint8Array([...nonce, 0xaa]))).toThrow(RangeError);
    expect(() => seal(params, plaintext, new Uint8Array(4))).toThrow(RangeError);
  });
});

describe('seal/open round trip', () => {
  const dek = randomBytes(32);
  const cases: Array<[string, number]> = [
    ['empty', 0],
    ['1 byte', 1],
    ['15 bytes', 15],
    ['16 bytes', 16],
    ['64 KiB', 64 * 1024],
  ];

  for (const [name, size] of cases) {
    for (const aad of [undefined, Buffer.from('tenant=7'), Buffer.alloc(0), randomBytes(300)]) {
      const aadName = aad === undefined ? 'no AAD' : `${aad.length}-byte AAD`;
      it(`${name}, ${aadName}`, () => {
        const plaintext = randomBytes(size);
        const plainCopy = Buffer.from(plaintext);
        const params: SealParams = { dek, keyId: 'tenant/a:b', version: 3, ...(aad ? { aad } : {}) };
        const envelope = seal(params, plaintext, new NoncePool(4));
        expect(envelope).toHaveLength(ENVELOPE_HEADER_BYTES + size + TAG_BYTES);
        expect(plaintext.equals(plainCopy)).toBe(true); // input untouched
        if (size > 16) expect(envelope.includes(plaintext.subarray(0, 16))).toBe(false);
        const opened = open(params, envelope);
        expect(opened.equals(plaintext)).toBe(true);
      });
    }
  }

  it('accepts a plain Uint8Array plaintext and a Uint8Array envelope view at an offset', () => {
    const params: SealParams = { dek, keyId: 'k', version: 9 };
    const plaintext = new Uint8Array([1, 2, 3, 4, 5]);
    const envelope = seal(params, plaintext, new NoncePool());
    // Embed in a larger ArrayBuffer so byteOffset != 0.
    const backing = new Uint8Array(envelope.length + 20);
    backing.fill(0xee);
    backing.set(envelope, 7);
    const view = backing.subarray(7, 7 + envelope.length);
    expect(envelopeVersion(view)).toBe(9);
    expect([...open(params, view)]).toEqual([1, 2, 3, 4, 5]);
  });

  it('does not change the DEK or the AAD', () => {
    const key = randomBytes(32);
    const keyCopy = Buffer.from(key);
    const aad = Buffer.from('aad');
    const params: SealParams = { dek: key, keyId: 'k', version: 1, aad };
    open(params, seal(params, Buffer.from('x'), new NoncePool()));
    expect(key.equals(keyCopy)).toBe(true);
    expect(aad.toString()).toBe('aad');
  });
});

describe('envelope header layout', () => {
  it('is 0x01, uint32 BE version, 12-byte nonce, body, 16-byte tag', () => {
    const dek = randomBytes(32);
    const nonce = randomBytes(12);
    const plaintext = randomBytes(50);
    const aad = Buffer.from('ctx');
    for (const version of [1, 0x01020304, 0xdeadbeef, 4294967295]) {
      const envelope = seal({ dek, keyId: 'a/b', version, aad }, plaintext, new Uint8Array(nonce));
      expect(envelope[0]).toBe(0x01);
      expect(envelope.readUInt32BE(1)).toBe(version);
      expect(envelope.subarray(5, 17).equals(nonce)).toBe(true);
      expect(envelopeVersion(envelope)).toBe(version);
      expect(envelope.equals(referenceEnvelope(dek, 'a/b', version, nonce, plaintext, aad))).toBe(true);
    }
    const v = seal({ dek, keyId: 'a/b', version: 0x01020304 }, plaintext, new Uint8Array(nonce));
    expect([...v.subarray(0, 5)]).toEqual([0x01, 0x01, 0x02, 0x03, 0x04]);
  });

  it('with a pool nonce, decrypts independently using the header nonce and the trailing tag', () => {
    const dek = randomBytes(32);
    const plaintext = Buffer.from('independent check');
    const envelope = seal({ dek, keyId: 'k', version: 2 }, plaintext, new NoncePool());
    const decipher = createDecipheriv('aes-256-gcm', dek, envelope.subarray(5, 17), { authTagLength: 16 });
    decipher.setAAD(Buffer.from('kmsgw/v1 k 2'));
    decipher.setAuthTag(envelope.subarray(envelope.length - 16));
    const out = Buffer.concat([decipher.update(envelope.subarray(17, envelope.length - 16)), decipher.final()]);
    expect(out.toString()).toBe('independent check');
  });
});

describe('envelope authentication failures', () => {
  const dek = randomBytes(32);
  const aad = Buffer.from('row:1');
  const params: SealParams = { dek, keyId: 'demo/key', version: 5, aad };
  const plaintext = Buffer.from('abc');
  const envelope = seal(params, plaintext, new NoncePool());

  it('the untampered envelope opens', () => {
    expect(open(params, envelope).toString()).toBe('abc');
  });

  it('any change to any single byte gives DECRYPT_FAILED', () => {
    expect(envelope).toHaveLength(36);
    for (let i = 0; i < envelope.length; i++) {
      for (let x = 1; x < 256; x++) {
        const bad = Buffer.from(envelope);
        bad[i] = (bad[i] as number) ^ x;
        expectDecryptFailed(() => open(params, bad), `byte ${i} ^ ${x}`);
      }
    }
    // Tampering copies left the original intact.
    expect(open(params, envelope).toString()).toBe('abc');
  });

  it('tampering with an empty-plaintext envelope is caught too', () => {
    const empty = seal(params, new Uint8Array(0), new NoncePool());
    expect(empty).toHaveLength(ENVELOPE_MIN_BYTES);
    for (let i = 0; i < empty.length; i++) {
      const bad = Buffer.from(empty);
      bad[i] = (bad[i] as number) ^ 0x01;
      expectDecryptFailed(() => open(params, bad), `byte ${i}`);
    }
  });

  it.each<[string, Partial<SealParams>]>([
    ['other key id', { keyId: 'demo/kez' }],
    ['key id prefix', { keyId: 'demo/ke' }],
    ['key id extended', { keyId: 'demo/key2' }],
    ['other version', { version: 6 }],
    ['other caller AAD', { aad: Buffer.from('row:2') }],
    ['caller AAD prefix', { aad: Buffer.from('row:') }],
    ['missing caller AAD', { aad: undefined }],
    ['empty caller AAD', { aad: Buffer.alloc(0) }],
    ['extra byte in caller AAD', { aad: Buffer.from('row:1\u0000') }],
    ['wrong DEK', { dek: Buffer.from(dek.map((b, i) => (i === 31 ? b ^ 1 : b))) }],
    ['zero DEK', { dek: Buffer.alloc(32) }],
    ['short DEK', { dek: dek.subarray(0, 16) }],
    ['long DEK', { dek: Buffer.concat([dek, Buffer.alloc(1)]) }],
  ])('%s → DECRYPT_FAILED', (_name, change) => {
    expectDecryptFailed(() => open({ ...params, ...change }, envelope));
  });

  it('extra caller AAD on open of an envelope sealed without → DECRYPT_FAILED', () => {
    const plain: SealParams = { dek, keyId: 'demo/key', version: 5 };
    const env = seal(plain, plaintext, new NoncePool());
    expect(open(plain, env).toString()).toBe('abc');
    expectDecryptFailed(() => open({ ...plain, aad: Buffer.from('x') }, env));
    expectDecryptFailed(() => open({ ...plain, aad: new Uint8Array(0) }, env));
  });

  it('a re-labelled version header is refused even with the matching version', () => {
    const bad = Buffer.from(envelope);
    bad.writeUInt32BE(6, 1);
    expectDecryptFailed(() => open({ ...params, version: 6 }, bad));
    expectDecryptFailed(() => open(params, bad));
  });

  it('truncated, too short, extended or wrong-format envelopes → DECRYPT_FAILED', () => {
    expectDecryptFailed(() => open(params, envelope.subarray(0, envelope.length - 1)), 'minus last byte');
    expectDecryptFailed(() => open(params, envelope.subarray(1)), 'minus first byte');
    expectDecryptFailed(() => open(params, Buffer.concat([envelope, Buffer.alloc(1)])), 'extra byte');
    for (let n = 0; n < ENVELOPE_MIN_BYTES; n++) {
      expectDecryptFailed(() => open(params, envelope.subarray(0, n)), `length ${n}`);
      expectDecryptFailed(() => envelopeVersion(envelope.subarray(0, n)), `version of length ${n}`);
    }
    for (const format of [0x00, 0x02, 0x7f, 0xff]) {
      const bad = Buffer.from(envelope);
      bad[0] = format;
      expectDecryptFailed(() => open(params, bad), `format ${format}`);
      expectDecryptFailed(() => envelopeVersion(bad), `version with format ${format}`);
    }
    // Well-formed header, junk body.
    const junk = Buffer.alloc(ENVELOPE_MIN_BYTES);
    junk[0] = 0x01;
    junk.writeUInt32BE(5, 1);
    expect(envelopeVersion(junk)).toBe(5);
    expectDecryptFailed(() => open(params, junk), 'junk');
  });
});

describe('envelopeAad', () => {
  it('without caller AAD is exactly "kmsgw/v1 <id> <version>"', () => {
    const aad = envelopeAad('demo/key', 1);
    expect(aad.toString('hex')).toBe(Buffer.from('kmsgw/v1 demo/key 1').toString('hex'));
    expect(aad.toString('hex')).toBe('6b6d7367772f76312064656d6f2f6b65792031');
    expect(envelopeAad('a', 4294967295).toString('latin1')).toBe('kmsgw/v1 a 4294967295');
  });

  it('with caller AAD is the base, a 0x00, then the AAD bytes', () => {
    const callerAad = new Uint8Array([0xde, 0xad, 0x00, 0xbe, 0xef]);
    const aad = envelopeAad('t/k', 12, callerAad);
    expect(aad.equals(Buffer.concat([Buffer.from('kmsgw/v1 t/k 12', 'ascii'), Buffer.from([0]), callerAad]))).toBe(true);
    expect(aad.toString('hex')).toBe('6b6d7367772f763120742f6b203132' + '00' + 'dead00beef');
  });

  it('with empty caller AAD still appends the 0x00 separator (distinct from none)', () => {
    const none = envelopeAad('k', 1);
    const empty = envelopeAad('k', 1, new Uint8Array(0));
    expect(empty.equals(Buffer.concat([none, Buffer.from([0])]))).toBe(true);
    expect(empty.equals(none)).toBe(false);
  });

  it('fixed vector AAD bytes', () => {
    expect(envelopeAad('demo/key', 1, Buffer.from('row:42')).toString('hex')).toBe(
      '6b6d7367772f76312064656d6f2f6b65792031' + '00' + '726f773a3432',
    );
  });
});

describe('NoncePool', () => {
  it('nonces never repeat across 10,000 seals (default pool, refilled)', () => {
    const pool = new NoncePool();
    const dek = randomBytes(32);
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const envelope = seal({ dek, keyId: 'k', version: 1 }, Buffer.from([i & 0xff]), pool);
      seen.add(envelope.subarray(5, 17).toString('hex'));
    }
    expect(seen.size).toBe(10_000);
    expect(seen.has('000000000000000000000000')).toBe(false);
  });

  it('nonces never repeat across 10,000 seals with a tiny pool (thousands of refills)', () => {
    const pool = new NoncePool(3);
    const dek = randomBytes(32);
    const params: SealParams = { dek, keyId: 'k', version: 1 };
    const seen = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const envelope = seal(params, Buffer.from('p'), pool);
      seen.add(envelope.subarray(5, 17).toString('hex'));
      if (i % 1000 === 0) expect(open(params, envelope).toString()).toBe('p');
    }
    expect(seen.size).toBe(10_000);
  });

  it('writeInto writes exactly 12 bytes at the offset and refills after count nonces', () => {
    const pool = new NoncePool(2);
    const seen = new Set<string>();
    for (let i = 0; i < 7; i++) {
      const target = Buffer.alloc(30, 0xaa);
      pool.writeInto(target, 9);
      expect(target.subarray(0, 9).every((b) => b === 0xaa)).toBe(true);
      expect(target.subarray(21).every((b) => b === 0xaa)).toBe(true);
      const nonce = target.subarray(9, 21).toString('hex');
      expect(nonce).not.toBe('000000000000000000000000'); // a wiped slot is never handed out
      seen.add(nonce);
    }
    expect(seen.size).toBe(7);
  });

  it('an empty pool fails closed instead of handing out a nonce', () => {
    const target = Buffer.alloc(12, 0xaa);
    expect(() => new NoncePool(0).writeInto(target, 0)).toThrow(RangeError);
    expect(() => seal({ dek: randomBytes(32), keyId: 'k', version: 1 }, Buffer.from('x'), new NoncePool(0))).toThrow();
  });
});
