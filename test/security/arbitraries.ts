/** fast-check arbitraries for request lines, shared by the parser properties and the hostile-server test. */
import fc from 'fast-check';

export const VERBS = ['PING', 'AUTH', 'GET', 'ENC', 'DEC', 'CREATE', 'ROTATE', 'REWRAP', 'DESTROY', 'INFO', 'LIST'];
export const ID_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-/:';

export const keyIdArb = fc.oneof(
  fc.string({ unit: fc.constantFrom(...ID_CHARS), minLength: 1, maxLength: 24 }),
  fc.constantFrom('k', 'app/users', 'pg/cluster-1/wal', 'a'.repeat(256), 'a'.repeat(257)),
);
export const versionArb = fc.oneof(
  fc.integer({ min: 1, max: 0xffff_ffff }).map(String),
  fc.constantFrom('0', '01', '4294967296', '99999999999', '', '-1', '1e3', ' 1'),
);
export const keyRefArb = fc
  .tuple(keyIdArb, fc.option(versionArb, { nil: undefined }))
  .map(([id, v]) => (v === undefined ? id : `${id}@${v}`));
/** Payload tokens: canonical base64 of at least 6 random bytes, so 8+ characters that no fixed text contains. */
export const payloadArb = fc.uint8Array({ minLength: 6, maxLength: 90 }).map((b) => Buffer.from(b).toString('base64'));
export const kekArb = fc.oneof(
  fc.constantFrom('local://local-kek', 'fake://kek', 'aws-kms://alias/x', 'nope://x', 'LOCAL://x', 'local:/x', 'local://'),
  payloadArb.map((p) => `local://${p}`),
);
export const verbArb = fc.oneof(
  fc.constantFrom(...VERBS),
  fc.constantFrom(...VERBS).map((v) => v.toLowerCase()),
  fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 8 }),
);

export interface Request {
  readonly line: string;
  /** Tokens that are payloads or secrets (ENC/DEC data and aad, AUTH token). */
  readonly payloads: readonly string[];
}

export const validRequestArb: fc.Arbitrary<Request> = fc.oneof(
  fc.constant({ line: 'PING', payloads: [] }),
  payloadArb.map((t) => ({ line: `AUTH ${t}`, payloads: [t] })),
  keyRefArb.map((k) => ({ line: `GET ${k}`, payloads: [] })),
  fc
    .tuple(fc.constantFrom('ENC', 'DEC', 'enc', 'Dec'), keyRefArb, payloadArb, fc.option(payloadArb, { nil: undefined }))
    .map(([verb, k, data, aad]) => ({
      line: `${verb} ${k} ${data}${aad === undefined ? '' : ` ${aad}`}`,
      payloads: aad === undefined ? [data] : [data, aad],
    })),
  fc
    .tuple(fc.constantFrom('CREATE', 'ROTATE'), keyRefArb, fc.option(kekArb, { nil: undefined }))
    .map(([verb, k, kek]) => ({ line: `${verb} ${k}${kek === undefined ? '' : ` ${kek}`}`, payloads: [] })),
  fc.tuple(keyRefArb, kekArb).map(([k, kek]) => ({ line: `REWRAP ${k} ${kek}`, payloads: [] })),
  fc.tuple(fc.constantFrom('DESTROY', 'INFO'), keyRefArb).map(([verb, k]) => ({ line: `${verb} ${k}`, payloads: [] })),
  fc.option(keyIdArb, { nil: undefined }).map((p) => ({ line: p === undefined ? 'LIST' : `LIST ${p}`, payloads: [] })),
);

/** Characters mutations insert: separators, controls, DEL, high latin1, non-latin1, and protocol punctuation. */
export const mutationCharArb = fc.oneof(
  fc.constantFrom(
    ' ',
    '  ',
    '\t',
    '\r',
    '\0',
    '\x1b',
    '\x7f',
    '\x80',
    '\xff',
    'é',
    '\u2028',
    '\ud83d',
    '😀',
    '=',
    '@',
    '/',
    ':',
    '+',
    '-',
    '_',
  ),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 3 }),
);

export type Mutation =
  | { kind: 'insert'; at: number; text: string }
  | { kind: 'delete'; at: number; len: number }
  | { kind: 'replace'; at: number; text: string }
  | { kind: 'duplicate'; at: number; len: number }
  | { kind: 'case'; at: number; len: number }
  | { kind: 'truncate'; at: number };

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: mutationCharArb }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 12 }) }),
  fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), text: mutationCharArb }),
  fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 12 }) }),
  fc.record({ kind: fc.constant('case' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 12 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
);

export function mutate(line: string, mutations: readonly Mutation[]): string {
  let s = line;
  for (const m of mutations) {
    const at = m.at % (s.length + 1);
    switch (m.kind) {
      case 'insert':
        s = s.slice(0, at) + m.text + s.slice(at);
        break;
      case 'delete':
        s = s.slice(0, at) + s.slice(at + m.len);
        break;
      case 'replace':
        s = s.slice(0, at) + m.text + s.slice(at + m.text.length);
        break;
      case 'duplicate':
        s = s.slice(0, at + m.len) + s.slice(at, at + m.len) + s.slice(at + m.len);
        break;
      case 'case': {
        const part = s.slice(at, at + m.len);
        s = s.slice(0, at) + (part === part.toUpperCase() ? part.toLowerCase() : part.toUpperCase()) + s.slice(at + m.len);
        break;
      }
      case 'truncate':
        s = s.slice(0, at);
        break;
    }
  }
  return s;
}

export const mutatedRequestArb: fc.Arbitrary<Request> = fc
  .tuple(validRequestArb, fc.array(mutationArb, { minLength: 0, maxLength: 4 }))
  .map(([req, ms]) => ({ line: mutate(req.line, ms), payloads: req.payloads }));

/** Token soups: known verbs, key refs, payloads, KEK URIs and junk, joined by spaces (sometimes doubled). */
export const tokenSoupArb: fc.Arbitrary<Request> = fc
  .tuple(
    verbArb,
    fc.array(fc.oneof(keyRefArb, payloadArb, kekArb, fc.string({ unit: 'binary-ascii', maxLength: 10 })), { maxLength: 5 }),
    fc.constantFrom(' ', ' ', ' ', '  ', '\t'),
  )
  .map(([verb, rest, sep]) => ({
    line: [verb, ...rest].join(sep),
    payloads: rest.filter((t) => t.length >= 8 && /^[A-Za-z0-9+/]+=*$/.test(t) && t.length % 4 === 0),
  }));

export const arbitraryLineArb: fc.Arbitrary<Request> = fc
  .oneof(
    fc.string({ unit: 'binary', maxLength: 80 }),
    fc.string({ unit: 'binary-ascii', maxLength: 80 }),
    fc.string({ unit: fc.constantFrom(...'GETNCDPIgetncdpi @ kK1=+/\t\r\x00\x7f'), maxLength: 40 }),
  )
  .map((line) => ({ line, payloads: [] }));
