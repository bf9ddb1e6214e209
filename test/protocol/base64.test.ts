import { describe, expect, it } from 'vitest';
import { decodeBase64, isCanonicalBase64 } from '../../src/protocol/base64.js';
import { GatewayError } from '../../src/protocol/errors.js';
import { prng } from '../helpers/prng.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

function expectRejected(text: string): void {
  expect(isCanonicalBase64(text), JSON.stringify(text)).toBe(false);
  let thrown: unknown;
  try {
    decodeBase64(text, 'data');
  } catch (err) {
    thrown = err;
  }
  expect(thrown, JSON.stringify(text)).toBeInstanceOf(GatewayError);
  expect((thrown as GatewayError).code).toBe('BAD_REQUEST');
  expect((thrown as GatewayError).message).toBe('data is not canonical base64');
}

describe('canonical base64: RFC 4648 vectors', () => {
  it.each([
    ['', ''],
    ['f', 'Zg=='],
    ['fo', 'Zm8='],
    ['foo', 'Zm9v'],
    ['foob', 'Zm9vYg=='],
    ['fooba', 'Zm9vYmE='],
    ['foobar', 'Zm9vYmFy'],
  ])('%j ↔ %j', (plain, encoded) => {
    expect(isCanonicalBase64(encoded)).toBe(true);
    const decoded = decodeBase64(encoded, 'data');
    expect(Buffer.isBuffer(decoded)).toBe(true);
    expect(decoded.toString('latin1')).toBe(plain);
  });

  it('decodes all 64 alphabet characters in place', () => {
    const text = ALPHABET; // 64 chars, a multiple of 4
    expect(isCanonicalBase64(text)).toBe(true);
    const bytes = decodeBase64(text, 'data');
    expect(bytes).toHaveLength(48);
    expect(bytes.toString('base64')).toBe(text);
  });
});

describe('canonical base64: rejections', () => {
  it.each([
    ['missing both pads', 'Zg'],
    ['missing one of two pads', 'Zg='],
    ['missing pad', 'Zm8'],
    ['missing pads after a quantum', 'Zm9vYg'],
    ['missing pad after a quantum', 'Zm9vYmE'],
    ['single char', 'Z'],
    ['five chars', 'Zm9vY'],
  ])('%s: %j', (_name, text) => expectRejected(text));

  it.each([
    ['url-safe minus', 'Zm9v-A=='],
    ['url-safe underscore', '_w=='],
    ['url-safe only', '-_-_'],
    ['dot', 'Zm9.'],
    ['star', 'Zm9*'],
    ['non-ASCII', 'Zm9v\u00e9A=='],
    ['full-width letter', '\uff3am9v'],
    ['NUL', 'Zm9\u0000'],
  ])('bad alphabet, %s: %j', (_name, text) => expectRejected(text));

  it.each([
    ['trailing LF', 'Zm9v\n'],
    ['trailing CRLF', 'Zm9v\r\n'],
    ['leading space', ' Zm9v'],
    ['trailing space', 'Zm9v '],
    ['inner space', 'Zm 9vYg=='],
    ['inner tab', 'Zm9v\tYmFy'],
    ['line break in the middle', 'Zm9v\nYmFy'],
    ['space in place of a char', 'Zm9 '],
    ['only spaces', '    '],
  ])('whitespace, %s: %j', (_name, text) => expectRejected(text));

  it.each([
    ['Zg==', 'Zh=='],
    ['Zg==', 'Zj=='],
    ['Zg==', 'Zv=='],
    ['Zm8=', 'Zm9='],
    ['Zm8=', 'Zm+='],
    ['Zm9vYg==', 'Zm9vYh=='],
    ['Zm9vYmE=', 'Zm9vYmF='],
    ['/w==', '//=='],
    ['//8=', '///='],
  ])('non-canonical trailing bits: %j ok, %j rejected', (good, bad) => {
    expect(isCanonicalBase64(good)).toBe(true);
    expect(decodeBase64(good, 'data').toString('base64')).toBe(good);
    // Node's lenient decoder maps both to the same bytes; only one is canonical.
    expect(Buffer.from(bad, 'base64')).toEqual(Buffer.from(good, 'base64'));
    expectRejected(bad);
  });

  it.each(['Zg==Zg==', 'Zm8=Zm8=', 'Zg==Zm9v', '=Zm9', '==Zg', 'Z=g=', 'Zm=v', 'Zm9v=', 'Zm9v====', 'Z===', '====', '=', 'Zg==='])(
    'padding in the wrong place: %j',
    (text) => expectRejected(text),
  );

  it('uses the label in the error message', () => {
    expect(() => decodeBase64('Zh==', 'aad')).toThrow('aad is not canonical base64');
  });
});

describe('canonical base64: exhaustive', () => {
  it("accepts Node's encoding of every 1- and 2-byte input and decodes it back", () => {
    const buf1 = Buffer.alloc(1);
    for (let a = 0; a < 256; a++) {
      buf1[0] = a;
      const text = buf1.toString('base64');
      expect(isCanonicalBase64(text), text).toBe(true);
      expect(decodeBase64(text, 'data').equals(buf1), text).toBe(true);
    }
    const buf2 = Buffer.alloc(2);
    let accepted = 0;
    for (let v = 0; v < 65536; v++) {
      buf2[0] = v >> 8;
      buf2[1] = v & 0xff;
      const text = buf2.toString('base64');
      if (!isCanonicalBase64(text)) expect.fail(`rejected ${text} for ${buf2.toString('hex')}`);
      if (!decodeBase64(text, 'data').equals(buf2)) expect.fail(`bad decode of ${text}`);
      accepted++;
    }
    expect(accepted).toBe(65536);
  });

  it('accepts exactly the canonical form among all "XY==" and "XYZ=" quanta', () => {
    let accepted2 = 0;
    for (const x of ALPHABET) {
      for (const y of ALPHABET) {
        const text = `${x}${y}==`;
        const canonical = Buffer.from(text, 'base64').toString('base64') === text;
        if (isCanonicalBase64(text) !== canonical) expect.fail(`${text}: expected ${canonical}`);
        if (canonical) accepted2++;
      }
    }
    expect(accepted2).toBe(256); // one per byte value

    let accepted3 = 0;
    for (const x of ALPHABET) {
      for (const y of ALPHABET) {
        for (const z of ALPHABET) {
          const text = `${x}${y}${z}=`;
          const canonical = Buffer.from(text, 'base64').toString('base64') === text;
          if (isCanonicalBase64(text) !== canonical) expect.fail(`${text}: expected ${canonical}`);
          if (canonical) accepted3++;
        }
      }
    }
    expect(accepted3).toBe(65536); // one per 2-byte value
  });

  it('accepts every full quantum over the alphabet (sampled with a prefix)', () => {
    const rand = prng(3);
    for (let i = 0; i < 20000; i++) {
      let text = '';
      for (let j = 0; j < 4; j++) text += ALPHABET[Math.floor(rand() * 64)];
      const prefixed = `Zm9v${text}`;
      expect(isCanonicalBase64(text)).toBe(true);
      expect(isCanonicalBase64(prefixed)).toBe(true);
      expect(decodeBase64(prefixed, 'data').toString('base64')).toBe(prefixed);
    }
  });
});

describe('canonical base64: mutated strings', () => {
  it('every accepted mutant round-trips exactly, and every round-tripping string is accepted', () => {
    const rand = prng(2024);
    const extra = `${ALPHABET}=-_ \n\t.\u00e9`;
    let accepted = 0;
    let rejected = 0;
    for (let i = 0; i < 20000; i++) {
      const source = Buffer.alloc(Math.floor(rand() * 40));
      for (let j = 0; j < source.length; j++) source[j] = Math.floor(rand() * 256);
      let text = source.toString('base64');
      const mutations = 1 + Math.floor(rand() * 3);
      for (let m = 0; m < mutations; m++) {
        const at = Math.floor(rand() * (text.length + 1));
        const ch = extra[Math.floor(rand() * extra.length)] as string;
        const op = rand();
        if (op < 0.5 && text.length > 0)
          text = text.slice(0, at) + ch + text.slice(at + 1); // replace
        else if (op < 0.75)
          text = text.slice(0, at) + ch + text.slice(at); // insert
        else text = text.slice(0, at) + text.slice(at + 1); // delete
      }
      const ok = isCanonicalBase64(text);
      const roundTrips = Buffer.from(text, 'base64').toString('base64') === text;
      if (ok) {
        accepted++;
        const decoded = decodeBase64(text, 'data');
        if (decoded.toString('base64') !== text) expect.fail(`accepted ${JSON.stringify(text)} does not round-trip`);
      } else {
        rejected++;
        expect(() => decodeBase64(text, 'data')).toThrow(GatewayError);
      }
      if (ok !== roundTrips) expect.fail(`${JSON.stringify(text)}: accepted=${ok}, round-trips=${roundTrips}`);
    }
    // The sample must exercise both sides.
    expect(accepted).toBeGreaterThan(1000);
    expect(rejected).toBeGreaterThan(1000);
  });
});

describe('canonical base64 without a re-encoding pass', () => {
  // The definition the checks must match: exactly what Node would print for the bytes it decodes to.
  const byRoundTrip = (text: string) => text.length % 4 === 0 && Buffer.from(text, 'base64').toString('base64') === text;

  it('agrees with the round-trip definition on 200,000 near-miss strings', () => {
    const rand = prng(0xb64);
    const extra = '=-_ \n.*~\u00e9';
    let accepted = 0;
    for (let i = 0; i < 200_000; i++) {
      const n = 4 * Math.floor(rand() * 4) + (rand() < 0.1 ? Math.floor(rand() * 4) : 0);
      let text = '';
      for (let j = 0; j < n; j++) {
        const pool = rand() < 0.04 ? extra : ALPHABET;
        text += pool[Math.floor(rand() * pool.length)] as string;
      }
      // Often end like real padded input, to hit the trailing-bit and padding rules.
      if (n >= 4 && rand() < 0.5) {
        const p = rand() < 0.5 ? 1 : 2;
        text = text.slice(0, text.length - p) + '='.repeat(p);
      }
      const want = byRoundTrip(text);
      expect(isCanonicalBase64(text), JSON.stringify(text)).toBe(want);
      if (want) accepted++;
    }
    expect(accepted).toBeGreaterThan(10_000);
  });
});
