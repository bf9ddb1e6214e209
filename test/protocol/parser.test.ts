import { describe, expect, it } from 'vitest';
import { isCanonicalBase64 } from '../../src/protocol/base64.js';
import { ERROR_CODES } from '../../src/protocol/errors.js';
import { ADMIN_VERBS, MAX_KEY_ID_LENGTH, MAX_VERSION, parseKeyRef, parseRequest, type Command } from '../../src/protocol/parser.js';
import { prng } from '../helpers/prng.js';

const KEY_ID_TEXT = 'key id must be 1-256 characters of A-Z a-z 0-9 . _ - / :';
const VERSION_TEXT = 'key version must be a decimal number from 1 to 4294967295';
const SPACING_TEXT = 'requests are printable ASCII separated by single spaces';
const TOKEN_TEXT = 'tokens are separated by single spaces';

function okCommand(line: string): Command {
  const result = parseRequest(line);
  if (!result.ok) throw new Error(`expected ${JSON.stringify(line)} to parse, got ${result.code} ${result.text}`);
  return result.command;
}

function failure(line: string): { code: string; text: string } {
  const result = parseRequest(line);
  if (result.ok) throw new Error(`expected ${JSON.stringify(line)} to fail, got ${JSON.stringify(result.command)}`);
  return { code: result.code, text: result.text };
}

const ID_256 = 'k'.repeat(256);
const ID_257 = 'k'.repeat(257);
const ALL_ID_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/:';
const AWS_KEK = 'aws-kms://arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';

describe('parseRequest: valid requests', () => {
  it.each<[string, Command]>([
    ['PING', { verb: 'PING' }],
    ['ping', { verb: 'PING' }],
    ['PiNg', { verb: 'PING' }],

    ['GET k', { verb: 'GET', key: { id: 'k' } }],
    ['get k', { verb: 'GET', key: { id: 'k' } }],
    ['GET k@1', { verb: 'GET', key: { id: 'k', version: 1 } }],
    ['GET tenant/a.b_c-d:e@4294967295', { verb: 'GET', key: { id: 'tenant/a.b_c-d:e', version: 4294967295 } }],
    [`GET ${ALL_ID_CHARS}`, { verb: 'GET', key: { id: ALL_ID_CHARS } }],
    [`GET ${ID_256}`, { verb: 'GET', key: { id: ID_256 } }],
    [`GET ${ID_256}@7`, { verb: 'GET', key: { id: ID_256, version: 7 } }],

    ['ENC k ZGF0YQ==', { verb: 'ENC', key: { id: 'k' }, data: 'ZGF0YQ==' }],
    ['enc k@3 ZGF0YQ== YWFk', { verb: 'ENC', key: { id: 'k', version: 3 }, data: 'ZGF0YQ==', aad: 'YWFk' }],
    // The parser leaves payload validation (canonical base64) to its caller.
    ['ENC k !not-base64!', { verb: 'ENC', key: { id: 'k' }, data: '!not-base64!' }],
    ['DEC k AQAAAAE=', { verb: 'DEC', key: { id: 'k' }, data: 'AQAAAAE=' }],
    ['Dec a/b@12 AQAAAAE= cm93OjQy', { verb: 'DEC', key: { id: 'a/b', version: 12 }, data: 'AQAAAAE=', aad: 'cm93OjQy' }],

    ['CREATE k', { verb: 'CREATE', key: { id: 'k' } }],
    ['create k local://main', { verb: 'CREATE', key: { id: 'k' }, keks: ['local://main'] }],
    [`CREATE k ${AWS_KEK}`, { verb: 'CREATE', key: { id: 'k' }, keks: [AWS_KEK] }],
    ['ROTATE k', { verb: 'ROTATE', key: { id: 'k' } }],
    [
      'rotate a:b gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k',
      {
        verb: 'ROTATE',
        key: { id: 'a:b' },
        keks: ['gcp-kms://projects/p/locations/l/keyRings/r/cryptoKeys/k'],
      },
    ],

    ['DESTROY k@1', { verb: 'DESTROY', key: { id: 'k', version: 1 } }],
    ['destroy a/b@4294967295', { verb: 'DESTROY', key: { id: 'a/b', version: 4294967295 } }],
    ['REWRAP k aws-kms://alias/new', { verb: 'REWRAP', key: { id: 'k' }, keks: ['aws-kms://alias/new'] }],
    ['rewrap k@2 local://b', { verb: 'REWRAP', key: { id: 'k', version: 2 }, keks: ['local://b'] }],
    [`CREATE k local://a,${AWS_KEK}`, { verb: 'CREATE', key: { id: 'k' }, keks: ['local://a', AWS_KEK] }],
    ['REWRAP k local://a,local://b', { verb: 'REWRAP', key: { id: 'k' }, keks: ['local://a', 'local://b'] }],
    ['ADDKEK k local://b', { verb: 'ADDKEK', key: { id: 'k' }, keks: ['local://b'], all: false }],
    ['addkek k@3 local://b', { verb: 'ADDKEK', key: { id: 'k', version: 3 }, keks: ['local://b'], all: false }],
    ['ADDKEK k local://b,local://c all', { verb: 'ADDKEK', key: { id: 'k' }, keks: ['local://b', 'local://c'], all: true }],
    ['REMOVEKEK k local://a ALL', { verb: 'REMOVEKEK', key: { id: 'k' }, keks: ['local://a'], all: true }],
    ['ADDRECOVERY k', { verb: 'ADDRECOVERY', key: { id: 'k' } }],

    ['INFO k', { verb: 'INFO', key: { id: 'k' } }],
    ['info k@9', { verb: 'INFO', key: { id: 'k', version: 9 } }],

    ['LIST', { verb: 'LIST' }],
    ['list', { verb: 'LIST' }],
    ['LIST tenant/', { verb: 'LIST', prefix: 'tenant/' }],
    [`LIST ${ALL_ID_CHARS}`, { verb: 'LIST', prefix: ALL_ID_CHARS }],
    [`LIST ${ID_256}`, { verb: 'LIST', prefix: ID_256 }],
  ])('%s', (line, command) => {
    expect(parseRequest(line)).toEqual({ ok: true, command });
  });

  it('gives the version as a number', () => {
    const command = okCommand('GET k@42');
    expect(command.verb === 'GET' && command.key.version).toBe(42);
    expect(typeof (command as { key: { version?: unknown } }).key.version).toBe('number');
  });

  it('lists the admin verbs', () => {
    expect([...ADMIN_VERBS].sort()).toEqual([
      'ADDKEK',
      'ADDRECOVERY',
      'CREATE',
      'DESTROY',
      'INFO',
      'LIST',
      'REMOVEKEK',
      'REWRAP',
      'ROTATE',
    ]);
    expect(MAX_KEY_ID_LENGTH).toBe(256);
    expect(MAX_VERSION).toBe(4294967295);
  });
});

describe('parseRequest: arity', () => {
  it.each<[string, string]>([
    ['PING x', 'PING takes 0 arguments, got 1'],
    ['PING x y', 'PING takes 0 arguments, got 2'],
    ['GET', 'GET takes 1 argument, got 0'],
    ['GET a b', 'GET takes 1 argument, got 2'],
    ['INFO', 'INFO takes 1 argument, got 0'],
    ['INFO a b', 'INFO takes 1 argument, got 2'],
    ['DESTROY', 'DESTROY takes 1 argument, got 0'],
    ['DESTROY k@1 x', 'DESTROY takes 1 argument, got 2'],
    ['REWRAP k', 'REWRAP takes 2 arguments, got 1'],
    ['REWRAP k local://a x', 'REWRAP takes 2 arguments, got 3'],
    ['CREATE', 'CREATE takes 1 to 2 arguments, got 0'],
    ['CREATE k local://x y', 'CREATE takes 1 to 2 arguments, got 3'],
    ['ROTATE', 'ROTATE takes 1 to 2 arguments, got 0'],
    ['ROTATE k local://x y', 'ROTATE takes 1 to 2 arguments, got 3'],
    ['ENC', 'ENC takes 2 to 3 arguments, got 0'],
    ['ENC k', 'ENC takes 2 to 3 arguments, got 1'],
    ['ENC k ZA== YQ== x', 'ENC takes 2 to 3 arguments, got 4'],
    ['DEC', 'DEC takes 2 to 3 arguments, got 0'],
    ['DEC k', 'DEC takes 2 to 3 arguments, got 1'],
    ['dec k ZA== YQ== x', 'DEC takes 2 to 3 arguments, got 4'],
  ])('%s', (line, text) => {
    expect(parseRequest(line)).toEqual({ ok: false, code: 'BAD_REQUEST', text });
  });

  it('LIST takes at most one argument', () => {
    const f = failure('LIST a b');
    expect(f.code).toBe('BAD_REQUEST');
    expect(f.text).toMatch(/^LIST takes 0 to 1 argument/);
    expect(f.text).toMatch(/got 2$/);
  });
});

describe('parseRequest: spacing and characters', () => {
  it('rejects the empty line', () => {
    expect(parseRequest('')).toEqual({ ok: false, code: 'BAD_REQUEST', text: 'empty request' });
  });

  it.each([
    ['double space', 'GET  k', TOKEN_TEXT],
    ['double space after verb only arg', 'ENC k  ZA==', TOKEN_TEXT],
    ['leading space', ' PING', TOKEN_TEXT],
    ['trailing space', 'PING ', TOKEN_TEXT],
    ['trailing space after arg', 'GET k ', TOKEN_TEXT],
    ['only a space', ' ', TOKEN_TEXT],
    ['only spaces', '   ', TOKEN_TEXT],
    ['tab separator', 'GET\tk', SPACING_TEXT],
    ['trailing tab', 'PING\t', SPACING_TEXT],
    ['trailing CR', 'PING\r', SPACING_TEXT],
    ['embedded LF', 'PING\nPING', SPACING_TEXT],
    ['NUL', 'GET k\u0000', SPACING_TEXT],
    ['ESC', '\u001bPING', SPACING_TEXT],
    ['DEL', 'GET k\u007f', SPACING_TEXT],
    ['latin1 high byte', 'GET k\u00e9', SPACING_TEXT],
    ['0x80', 'GET \u0080', SPACING_TEXT],
    ['0xff', 'PING\u00ff', SPACING_TEXT],
    ['non-latin1', 'GET k\u2028', SPACING_TEXT],
    ['non-ASCII verb lookalike', 'P\u0130NG', SPACING_TEXT],
    ['NBSP separator', 'GET\u00a0k', SPACING_TEXT],
    ['emoji', 'GET \u{1f511}', SPACING_TEXT],
  ])('%s → BAD_REQUEST', (_name, line, text) => {
    expect(parseRequest(line)).toEqual({ ok: false, code: 'BAD_REQUEST', text });
  });

  it('rejects every control byte and every byte above 0x7e in any position', () => {
    const bad: number[] = [];
    for (let c = 0; c < 0x20; c++) bad.push(c);
    for (let c = 0x7f; c <= 0xff; c++) bad.push(c);
    for (const c of bad) {
      const ch = String.fromCharCode(c);
      for (const line of [`${ch}PING`, `PING${ch}`, `GET k${ch}`, `GET ${ch}k`, `ENC k${ch} ZA==`]) {
        expect(parseRequest(line), `char 0x${c.toString(16)} in ${JSON.stringify(line)}`).toEqual({
          ok: false,
          code: 'BAD_REQUEST',
          text: SPACING_TEXT,
        });
      }
    }
  });
});

describe('parseRequest: payload tokens', () => {
  it('leaves a bad byte in a payload to the base64 check, which refuses it', () => {
    for (let c = 0; c <= 0xff; c++) {
      const ch = String.fromCharCode(c);
      if (ch === ' ' || /[A-Za-z0-9+/=]/.test(ch)) continue;
      for (const data of [`ZA==${ch}`, `${ch}ZA==`, `Z${ch}A=`]) {
        const parsed = parseRequest(`ENC k ${data}`);
        if (!parsed.ok) {
          expect(parsed.code).toBe('BAD_REQUEST');
          continue;
        }
        expect(parsed.command).toMatchObject({ verb: 'ENC', data });
        expect(isCanonicalBase64(data), JSON.stringify(data)).toBe(false);
      }
    }
  });
});

describe('parseRequest: unknown verbs', () => {
  it.each([
    ['FOO', 'unknown verb FOO'],
    ['foo k', 'unknown verb FOO'],
    ['PINGS', 'unknown verb PINGS'],
    ['GETS k', 'unknown verb GETS'],
    ['Encrypt k ZA==', 'unknown verb ENCRYPT'],
    ['ABCDEFGHIJKLMNOP', 'unknown verb ABCDEFGHIJKLMNOP'],
  ])('%s echoes an alphabetic verb', (line, text) => {
    expect(parseRequest(line)).toEqual({ ok: false, code: 'UNKNOWN_VERB', text });
  });

  it.each([
    'GET1 k',
    'G3T k',
    '<script>',
    'ping!',
    'PING:',
    'a/b',
    '1234',
    '-',
    'ENC=',
    'DROP;TABLE',
    'ABCDEFGHIJKLMNOPQ', // 17 letters: too long to echo
    'ZGF0YQ==',
  ])('%s gives UNKNOWN_VERB without echoing the verb', (line) => {
    const result = parseRequest(line);
    expect(result).toEqual({ ok: false, code: 'UNKNOWN_VERB', text: 'unknown verb' });
  });

  it('never echoes a non-alphabetic verb (random printable verbs)', () => {
    const rand = prng(7);
    let checked = 0;
    for (let i = 0; i < 3000; i++) {
      const length = 1 + Math.floor(rand() * 20);
      let verb = '';
      for (let j = 0; j < length; j++) verb += String.fromCharCode(0x21 + Math.floor(rand() * 94));
      const f = failure(`${verb} k`);
      expect(f.code).toBe('UNKNOWN_VERB');
      if (/^[A-Za-z]{1,16}$/.test(verb)) {
        expect(f.text).toBe(`unknown verb ${verb.toUpperCase()}`);
      } else {
        expect(f.text).toBe('unknown verb');
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(2500);
  });
});

describe('parseRequest: key ids', () => {
  it.each([
    ['257 chars', `GET ${ID_257}`],
    ['257 chars with version', `GET ${ID_257}@1`],
    ['empty id with version', 'GET @1'],
    ['@ alone', 'GET @'],
    ['hash', 'GET a#b'],
    ['comma', 'GET a,b'],
    ['plus', 'GET a+b'],
    ['equals', 'GET a=b'],
    ['star', 'GET a*b'],
    ['backslash', 'GET a\\b'],
    ['quote', 'GET a"b'],
    ['percent', 'GET a%20b'],
    ['tilde', 'GET ~a'],
    ['bad char before @', 'GET a!@1'],
    ['INFO', 'INFO a#b'],
    ['DESTROY', 'DESTROY a#b@1'],
    ['CREATE', 'CREATE a#b'],
    ['ROTATE', `ROTATE ${ID_257}`],
    ['ENC', 'ENC a#b ZA=='],
    ['DEC', 'DEC a#b ZA=='],
  ])('%s → BAD_REQUEST', (_name, line) => {
    expect(parseRequest(line)).toEqual({ ok: false, code: 'BAD_REQUEST', text: KEY_ID_TEXT });
  });

  it('accepts every allowed character alone and rejects every other printable one', () => {
    for (let c = 0x21; c <= 0x7e; c++) {
      const ch = String.fromCharCode(c);
      const result = parseRequest(`GET ${ch}`);
      if (ALL_ID_CHARS.includes(ch)) {
        expect(result, ch).toEqual({ ok: true, command: { verb: 'GET', key: { id: ch } } });
      } else {
        // Includes '@' alone: an empty id before the '@'.
        expect(result, ch).toEqual({ ok: false, code: 'BAD_REQUEST', text: KEY_ID_TEXT });
      }
    }
  });

  it.each([
    ['@0', 'GET k@0'],
    ['@01', 'GET k@01'],
    ['@00', 'GET k@00'],
    ['@4294967296', 'GET k@4294967296'],
    ['@9999999999', 'GET k@9999999999'],
    ['@11 digits', 'GET k@10000000000'],
    ['@ empty', 'GET k@'],
    ['@-1', 'GET k@-1'],
    ['@+1', 'GET k@+1'],
    ['@1.0', 'GET k@1.0'],
    ['@1e3', 'GET k@1e3'],
    ['@0x10', 'GET k@0x10'],
    ['@abc', 'GET k@abc'],
    ['@1@2', 'GET k@1@2'],
    ['@@1', 'GET k@@1'],
    ['@1/', 'GET k@1/'],
    ['INFO', 'INFO k@0'],
    ['DESTROY', 'DESTROY k@0'],
    ['ENC', 'ENC k@01 ZA=='],
    ['DEC', 'DEC k@4294967296 ZA=='],
  ])('version %s → BAD_REQUEST', (_name, line) => {
    expect(parseRequest(line)).toEqual({ ok: false, code: 'BAD_REQUEST', text: VERSION_TEXT });
  });

  it.each([
    ['1', 1],
    ['9', 9],
    ['10', 10],
    ['4294967294', 4294967294],
    ['4294967295', 4294967295],
    ['1000000000', 1000000000],
  ])('version @%s is accepted', (digits, version) => {
    expect(parseKeyRef(`a/b@${digits}`)).toEqual({ id: 'a/b', version });
  });

  it('parseKeyRef returns the error text or the ref', () => {
    expect(parseKeyRef('k')).toEqual({ id: 'k' });
    expect(parseKeyRef('k')).not.toHaveProperty('version');
    expect(parseKeyRef('')).toBe(KEY_ID_TEXT);
    expect(parseKeyRef(ID_257)).toBe(KEY_ID_TEXT);
    expect(parseKeyRef('k@0')).toBe(VERSION_TEXT);
  });

  it('DESTROY requires @version', () => {
    expect(parseRequest('DESTROY k')).toEqual({
      ok: false,
      code: 'BAD_REQUEST',
      text: 'DESTROY needs a key id with @version',
    });
  });

  it.each([
    ['CREATE k@1', 'CREATE takes a key id without @version'],
    ['create k@1 local://x', 'CREATE takes a key id without @version'],
    ['ROTATE k@2', 'ROTATE takes a key id without @version'],
    ['ROTATE k@2 local://x', 'ROTATE takes a key id without @version'],
  ])('%s refuses @version', (line, text) => {
    expect(parseRequest(line)).toEqual({ ok: false, code: 'BAD_REQUEST', text });
  });

  it('rejects a bad LIST prefix', () => {
    for (const line of ['LIST a#b', `LIST ${ID_257}`, 'LIST a@1', 'LIST *']) {
      expect(parseRequest(line), line).toEqual({
        ok: false,
        code: 'BAD_REQUEST',
        text: 'prefix must be characters allowed in a key id',
      });
    }
  });
});

describe('parseRequest: KEK URIs', () => {
  it.each([
    'local://k',
    'local://main/key-1',
    AWS_KEK,
    'gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k',
    'azure-kv://vault.vault.azure.net/keys/k/0123',
    'a+b.c-d://x',
    's3://x',
    'x://!~',
    `local://${'a'.repeat(2048)}`,
  ])('accepts %s', (kek) => {
    expect(parseRequest(`CREATE k ${kek}`)).toEqual({ ok: true, command: { verb: 'CREATE', key: { id: 'k' }, keks: [kek] } });
    expect(parseRequest(`ROTATE k ${kek}`)).toEqual({ ok: true, command: { verb: 'ROTATE', key: { id: 'k' }, keks: [kek] } });
  });

  it.each([
    ['CREATE k local://a,local://a', 'a KEK is listed twice'],
    ['CREATE k local://a,', 'KEK URI must look like scheme://...'],
    [`CREATE k ${Array.from({ length: 9 }, (_, i) => `local://k${i}`).join(',')}`, 'at most 8 KEKs per key'],
    ['ADDKEK k@2 local://a ALL', 'ADDKEK takes @version or ALL, not both'],
    ['REMOVEKEK k local://a SOME', "REMOVEKEK's third argument can only be ALL"],
    ['ADDKEK k', 'ADDKEK takes 2 to 3 arguments, got 1'],
    ['ADDRECOVERY k@1', 'ADDRECOVERY takes a key id without @version'],
    ['ADDRECOVERY k local://a', 'ADDRECOVERY takes 1 argument, got 2'],
  ])('refuses %s: %s', (line, text) => {
    expect(parseRequest(line)).toEqual({ ok: false, code: 'BAD_REQUEST', text });
  });

  it.each([
    'local:/k',
    'local:k',
    'local',
    '://x',
    'local://',
    'Local://k',
    'LOCAL://k',
    '1abc://k',
    '-x://k',
    '+x://k',
    'lo_cal://k',
    `local://${'a'.repeat(2049)}`,
  ])('rejects %s', (kek) => {
    for (const verb of ['CREATE', 'ROTATE']) {
      expect(parseRequest(`${verb} k ${kek}`)).toEqual({
        ok: false,
        code: 'BAD_REQUEST',
        text: 'KEK URI must look like scheme://...',
      });
    }
  });
});

describe('parseRequest: totality and safe error texts', () => {
  it('never throws, and every error is a known code with printable text and no payload', () => {
    const rand = prng(99);
    const verbs = ['PING', 'GET', 'ENC', 'DEC', 'CREATE', 'ROTATE', 'REWRAP', 'DESTROY', 'INFO', 'LIST', 'enc', 'X'];
    const codes = new Set<string>(ERROR_CODES);
    for (let i = 0; i < 5000; i++) {
      const tokens = [verbs[Math.floor(rand() * verbs.length)] as string];
      const n = Math.floor(rand() * 5);
      for (let j = 0; j < n; j++) {
        const len = Math.floor(rand() * 8);
        let t = '';
        for (let k = 0; k < len; k++) {
          const r = rand();
          t += r < 0.9 ? String.fromCharCode(0x20 + Math.floor(rand() * 95)) : String.fromCharCode(Math.floor(rand() * 256));
        }
        tokens.push(t);
      }
      const line = tokens.join(' ');
      const result = parseRequest(line);
      if (!result.ok) {
        expect(codes.has(result.code)).toBe(true);
        expect(result.text).toMatch(/^[\x20-\x7e]+$/);
      }
    }
  });

  it('ENC/DEC errors never echo the payload or AAD', () => {
    const secret = 'U0VDUkVUU0VDUkVU';
    for (const line of [
      `ENC a#b ${secret}`,
      `DEC k@0 ${secret}`,
      `ENC k ${secret} ${secret} ${secret}`,
      `DEC ${secret}`,
      `ENC k@01 ZA== ${secret}`,
    ]) {
      const f = failure(line);
      expect(f.code).toBe('BAD_REQUEST');
      expect(f.text).not.toContain(secret);
    }
  });
});
