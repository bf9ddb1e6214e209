import type { ErrorCode } from './errors.js';

/** A key id, optionally pinned to one DEK version (`id@version`). */
export interface KeyRef {
  readonly id: string;
  readonly version?: number;
}

/** Every request the protocol knows; `verb` discriminates. Payloads stay base64 text. */
export type Command =
  | { readonly verb: 'PING' }
  | { readonly verb: 'AUTH'; readonly token: string }
  | { readonly verb: 'GET'; readonly key: KeyRef }
  | { readonly verb: 'ENC'; readonly key: KeyRef; readonly data: string; readonly aad?: string }
  | { readonly verb: 'DEC'; readonly key: KeyRef; readonly data: string; readonly aad?: string }
  | { readonly verb: 'CREATE'; readonly key: KeyRef; readonly keks?: readonly string[] }
  | { readonly verb: 'ROTATE'; readonly key: KeyRef; readonly keks?: readonly string[] }
  | { readonly verb: 'DESTROY'; readonly key: KeyRef }
  | { readonly verb: 'REWRAP'; readonly key: KeyRef; readonly keks: readonly string[] }
  | { readonly verb: 'ADDKEK'; readonly key: KeyRef; readonly keks: readonly string[]; readonly all: boolean }
  | { readonly verb: 'REMOVEKEK'; readonly key: KeyRef; readonly keks: readonly string[]; readonly all: boolean }
  | { readonly verb: 'ADDRECOVERY'; readonly key: KeyRef }
  | { readonly verb: 'INFO'; readonly key: KeyRef }
  | { readonly verb: 'LIST'; readonly prefix?: string };

export type Verb = Command['verb'];

/** Verbs that use a key's DEK. */
export const DATA_VERBS = ['GET', 'ENC', 'DEC'] as const satisfies readonly Verb[];
/** Verbs that change or describe keys rather than use them. */
export const ADMIN_VERBS = [
  'CREATE',
  'ROTATE',
  'REWRAP',
  'ADDKEK',
  'REMOVEKEK',
  'ADDRECOVERY',
  'DESTROY',
  'INFO',
  'LIST',
] as const satisfies readonly Verb[];
/** Verbs about the connection itself, open to every client. */
export const SESSION_VERBS = ['PING', 'AUTH'] as const satisfies readonly Verb[];
/** Every verb, once: the lists above must cover `Command` exactly (checked below at compile time). */
export const VERBS = [...SESSION_VERBS, ...DATA_VERBS, ...ADMIN_VERBS] as const;
type Missing = Exclude<Verb, (typeof VERBS)[number]>;
const everyVerbListed: [Missing] extends [never] ? true : Missing = true;
void everyVerbListed;

export type ParseResult =
  { readonly ok: true; readonly command: Command } | { readonly ok: false; readonly code: ErrorCode; readonly text: string };

/** Longest key id, in characters, without the `@version` suffix. */
export const MAX_KEY_ID_LENGTH = 256;
/** Longest bearer token accepted by AUTH. */
export const MAX_TOKEN_LENGTH = 512;
/** Highest DEK version: it is a uint32 in the envelope header. */
export const MAX_VERSION = 0xffff_ffff;
/** Most KEKs one DEK version may be wrapped under (`CREATE id kek1,kek2,...`). */
export const MAX_KEKS = 8;

const KEY_ID_RE = /^[A-Za-z0-9._\-/:]{1,256}$/;
const VERSION_RE = /^[1-9][0-9]{0,9}$/;
const PREFIX_RE = /^[A-Za-z0-9._\-/:]{0,256}$/;
const KEK_URI_RE = /^[a-z][a-z0-9+.-]*:\/\/[\x21-\x7e]{1,2048}$/;
// Printable ASCII only: the protocol is ASCII and a control byte is never valid.
const NOT_PRINTABLE_RE = /[^\x20-\x7e]/;
const SAFE_VERB_RE = /^[A-Za-z]{1,16}$/;

function fail(code: ErrorCode, text: string): ParseResult {
  return { ok: false, code, text };
}

function ok(command: Command): ParseResult {
  return { ok: true, command };
}

/** Parses `kek-uri[,kek-uri...]`: distinct URIs, at most MAX_KEKS; returns an error text when malformed. */
export function parseKekList(token: string): readonly string[] | string {
  const keks = token.split(',');
  if (keks.length > MAX_KEKS) return `at most ${MAX_KEKS} KEKs per key`;
  for (const kek of keks) if (!KEK_URI_RE.test(kek)) return 'KEK URI must look like scheme://...';
  if (new Set(keks).size !== keks.length) return 'a KEK is listed twice';
  return keks;
}

/** Parses `id` or `id@version`; returns an error text when malformed. */
export function parseKeyRef(token: string): KeyRef | string {
  const at = token.indexOf('@');
  const id = at === -1 ? token : token.slice(0, at);
  if (!KEY_ID_RE.test(id)) {
    return 'key id must be 1-256 characters of A-Z a-z 0-9 . _ - / :';
  }
  if (at === -1) return { id };
  const digits = token.slice(at + 1);
  if (!VERSION_RE.test(digits) || Number(digits) > MAX_VERSION) {
    return 'key version must be a decimal number from 1 to 4294967295';
  }
  return { id, version: Number(digits) };
}

function arity(verb: string, tokens: readonly string[], min: number, max: number): string | undefined {
  const n = tokens.length - 1;
  if (n < min || n > max) {
    const want = min === max ? `${min}` : `${min} to ${max}`;
    return `${verb} takes ${want} argument${max === 1 ? '' : 's'}, got ${n}`;
  }
  return undefined;
}

/**
 * The hot verbs in their usual form (`GET id`, `ENC|DEC id data [aad]`,
 * upper case) without splitting or scanning the whole line. It only ever
 * accepts: anything unusual returns undefined and takes the general path.
 * Payload tokens are left to the verb's canonical-base64 check, which refuses
 * every character the general path's printable-ASCII scan would.
 */
function parseHot(line: string): ParseResult | undefined {
  const c0 = line.charCodeAt(0);
  if (c0 === 0x47 /* G */ && line.startsWith('GET ')) {
    const token = line.slice(4);
    if (token.indexOf(' ') !== -1) return undefined;
    const key = parseKeyRef(token);
    return typeof key === 'string' ? undefined : ok({ verb: 'GET', key });
  }
  if ((c0 === 0x45 /* E */ && line.startsWith('ENC ')) || (c0 === 0x44 /* D */ && line.startsWith('DEC '))) {
    const idEnd = line.indexOf(' ', 4);
    if (idEnd === -1) return undefined;
    const dataEnd = line.indexOf(' ', idEnd + 1);
    const aadStart = dataEnd === -1 ? -1 : dataEnd + 1;
    if (aadStart !== -1 && line.indexOf(' ', aadStart) !== -1) return undefined;
    const data = line.slice(idEnd + 1, dataEnd === -1 ? undefined : dataEnd);
    const aad = aadStart === -1 ? undefined : line.slice(aadStart);
    if (data.length === 0 || aad?.length === 0) return undefined;
    const key = parseKeyRef(line.slice(4, idEnd));
    if (typeof key === 'string') return undefined;
    const verb = c0 === 0x45 ? 'ENC' : 'DEC';
    return ok(aad === undefined ? { verb, key, data } : { verb, key, data, aad });
  }
  return undefined;
}

/**
 * Parses one request line (without its line ending). Pure and total: any
 * input gives a command or an error code with a text that echoes no payload.
 */
export function parseRequest(line: string): ParseResult {
  const fast = parseHot(line);
  if (fast !== undefined) return fast;
  if (line.length === 0) return fail('BAD_REQUEST', 'empty request');
  if (NOT_PRINTABLE_RE.test(line)) {
    return fail('BAD_REQUEST', 'requests are printable ASCII separated by single spaces');
  }
  const tokens = line.split(' ');
  const rawVerb = tokens[0] as string;
  for (const token of tokens) {
    if (token.length === 0) return fail('BAD_REQUEST', 'tokens are separated by single spaces');
  }
  const verb = rawVerb.toUpperCase();
  let bad: string | undefined;
  switch (verb) {
    case 'PING':
      if ((bad = arity(verb, tokens, 0, 0))) return fail('BAD_REQUEST', bad);
      return ok({ verb });
    case 'AUTH': {
      if ((bad = arity(verb, tokens, 1, 1))) return fail('BAD_REQUEST', bad);
      const token = tokens[1] as string;
      if (token.length > MAX_TOKEN_LENGTH) return fail('BAD_REQUEST', 'token too long');
      return ok({ verb, token });
    }
    case 'LIST': {
      if ((bad = arity(verb, tokens, 0, 1))) return fail('BAD_REQUEST', bad);
      const prefix = tokens[1];
      if (prefix === undefined) return ok({ verb });
      if (!PREFIX_RE.test(prefix)) return fail('BAD_REQUEST', 'prefix must be characters allowed in a key id');
      return ok({ verb, prefix });
    }
    case 'GET':
    case 'INFO':
    case 'DESTROY':
    case 'ADDRECOVERY':
    case 'CREATE':
    case 'ROTATE': {
      const extra = verb === 'CREATE' || verb === 'ROTATE' ? 1 : 0;
      if ((bad = arity(verb, tokens, 1, 1 + extra))) return fail('BAD_REQUEST', bad);
      const key = parseKeyRef(tokens[1] as string);
      if (typeof key === 'string') return fail('BAD_REQUEST', key);
      if (verb === 'GET' || verb === 'INFO') return ok({ verb, key });
      if (verb === 'DESTROY') {
        if (key.version === undefined) return fail('BAD_REQUEST', 'DESTROY needs a key id with @version');
        return ok({ verb, key });
      }
      if (key.version !== undefined) return fail('BAD_REQUEST', `${verb} takes a key id without @version`);
      if (verb === 'ADDRECOVERY') return ok({ verb, key });
      if (tokens[2] === undefined) return ok({ verb, key });
      const keks = parseKekList(tokens[2]);
      if (typeof keks === 'string') return fail('BAD_REQUEST', keks);
      return ok({ verb, key, keks });
    }
    case 'REWRAP': {
      if ((bad = arity(verb, tokens, 2, 2))) return fail('BAD_REQUEST', bad);
      const key = parseKeyRef(tokens[1] as string);
      if (typeof key === 'string') return fail('BAD_REQUEST', key);
      const keks = parseKekList(tokens[2] as string);
      if (typeof keks === 'string') return fail('BAD_REQUEST', keks);
      return ok({ verb, key, keks });
    }
    case 'ADDKEK':
    case 'REMOVEKEK': {
      if ((bad = arity(verb, tokens, 2, 3))) return fail('BAD_REQUEST', bad);
      const key = parseKeyRef(tokens[1] as string);
      if (typeof key === 'string') return fail('BAD_REQUEST', key);
      const keks = parseKekList(tokens[2] as string);
      if (typeof keks === 'string') return fail('BAD_REQUEST', keks);
      const scope = tokens[3];
      if (scope !== undefined && scope.toUpperCase() !== 'ALL') return fail('BAD_REQUEST', `${verb}'s third argument can only be ALL`);
      if (scope !== undefined && key.version !== undefined) return fail('BAD_REQUEST', `${verb} takes @version or ALL, not both`);
      return ok({ verb, key, keks, all: scope !== undefined });
    }
    case 'ENC':
    case 'DEC': {
      if ((bad = arity(verb, tokens, 2, 3))) return fail('BAD_REQUEST', bad);
      const key = parseKeyRef(tokens[1] as string);
      if (typeof key === 'string') return fail('BAD_REQUEST', key);
      const data = tokens[2] as string;
      const aad = tokens[3];
      return ok(aad === undefined ? { verb, key, data } : { verb, key, data, aad });
    }
    default:
      return fail('UNKNOWN_VERB', SAFE_VERB_RE.test(rawVerb) ? `unknown verb ${verb}` : 'unknown verb');
  }
}
