/**
 * A real gateway over its Unix socket, fed hundreds of random and mutated request
 * lines per run, pipelined in one write: every line gets exactly one reply line, in
 * order, of the form `OK ...` or `ERR <CODE> <text>`; lines the parser refuses get
 * exactly the parser's reply (which pins the order); the connection stays usable; and
 * a key created beforehand is unchanged, in the cache and on disk.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fileNameFor } from '../../src/keystore/file/index.js';
import { ERROR_CODES } from '../../src/protocol/errors.js';
import { parseRequest } from '../../src/protocol/parser.js';
import { formatError } from '../../src/protocol/reply.js';
import { rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { arbitraryLineArb, mutatedRequestArb, mutationArb, mutate, payloadArb, tokenSoupArb } from './arbitraries.js';
import { checkAsync } from './seed.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

const MAX_LINE = 4096;
const PRECIOUS = 'precious';
const REPLY_RE = new RegExp(`^(OK( [\\x20-\\x7e]+)?|ERR (${ERROR_CODES.join('|')}) [\\x20-\\x7e]+)$`);
const MUTATING = new Set(['CREATE', 'ROTATE', 'REWRAP', 'DESTROY']);

/** The fields of a stored key record that say which DEKs it holds, under which KEK. */
function keyFields(json: string): unknown {
  const record = JSON.parse(json) as { id: string; created: string; versions: Array<Record<string, unknown>> };
  return {
    id: record.id,
    created: record.created,
    versions: record.versions.map((v) => [v.version, v.kek, v.kekVersion, v.wrapped, v.commit, v.created, v.state, v.destroyed]),
  };
}

/** What the server must answer to `bytes` (one line without its LF): an exact reply, or a pattern. */
function oracle(bytes: Buffer, known: Map<string, string | RegExp>): string | RegExp {
  if (bytes.length > MAX_LINE) return `ERR TOO_LARGE request line exceeds ${MAX_LINE} bytes`;
  let text = bytes.toString('latin1');
  if (text.endsWith('\r')) text = text.slice(0, -1);
  const parsed = parseRequest(text);
  if (!parsed.ok) return formatError(parsed.code, parsed.text);
  const exact = known.get(text);
  if (exact !== undefined) return exact;
  // A line with a non-printable byte only parses on the ENC/DEC fast path; its payload check must refuse it.
  if (!/^[\x20-\x7e]*$/.test(text)) return /^ERR BAD_REQUEST /;
  return REPLY_RE;
}

describe('hostile request lines over a real socket', () => {
  it('random and mutated lines pipelined in one write: one reply each, in order; connection usable; stored key unchanged', async () => {
    const gw = await startTestGateway(await tmp(), {
      keys: { autoCreate: false },
      limits: { maxLineBytes: MAX_LINE, maxConnections: 1024, maxInFlight: 1024, idleTimeoutMs: 300_000, requestTimeoutMs: 30_000 },
      kms: { timeoutMs: 500 },
    });
    running.push(gw);
    const admin = await rawConnect(gw.socketPath as string);
    expect(await admin.ask(`CREATE ${PRECIOUS}`)).toBe('OK 1');
    expect(await admin.ask(`ROTATE ${PRECIOUS}`)).toBe('OK 2');
    expect(await admin.ask('CREATE faked fake://kek')).toBe('OK 1');
    const dek1 = await admin.ask(`GET ${PRECIOUS}@1`);
    const dek2 = await admin.ask(`GET ${PRECIOUS}@2`);
    expect(dek1).toMatch(/^OK [A-Za-z0-9+/]{43}=$/);
    expect(await admin.ask(`GET ${PRECIOUS}`)).toBe(dek2);
    const plain = Buffer.from('the precious plaintext').toString('base64');
    const aad = Buffer.from('row:7').toString('base64');
    const env = (await admin.ask(`ENC ${PRECIOUS}@1 ${plain} ${aad}`)).slice(3);
    const storePath = join(gw.dir, 'data', 'keys', fileNameFor(PRECIOUS));
    const storedBefore = await readFile(storePath, 'utf8');

    // Lines with a known exact reply, plus lines about the precious key that must fail.
    const known = new Map<string, string | RegExp>([
      ['PING', 'OK PONG'],
      [`GET ${PRECIOUS}@1`, dek1],
      [`GET ${PRECIOUS}@2`, dek2],
      [`GET ${PRECIOUS}`, dek2],
      [`DEC ${PRECIOUS} ${env} ${aad}`, `OK ${plain}`],
      [`DEC ${PRECIOUS}@1 ${env} ${aad}`, `OK ${plain}`],
      [`DEC ${PRECIOUS}@2 ${env} ${aad}`, /^ERR DECRYPT_FAILED /],
      [`DEC ${PRECIOUS} ${env}`, /^ERR DECRYPT_FAILED /],
      [`INFO ${PRECIOUS}`, /^OK \{"id":"precious",.*"primary":2,/],
    ]);
    const aboutPrecious = fc.oneof(
      fc.constantFrom(...known.keys()),
      payloadArb.map((p) => `ENC ${PRECIOUS} ${p}`),
      fc
        .tuple(fc.array(mutationArb, { minLength: 1, maxLength: 3 }), fc.constantFrom(`DEC ${PRECIOUS} ${env} ${aad}`, `GET ${PRECIOUS}@1`))
        .map(([ms, l]) => mutate(l, ms)),
      fc.constantFrom('GET faked', 'ENC faked AAAA', `INFO faked`, 'LIST', 'LIST p', 'AUTH sometoken'),
    );
    const lineArb: fc.Arbitrary<Buffer> = fc
      .oneof(
        { weight: 4, arbitrary: mutatedRequestArb.map((r) => r.line) },
        { weight: 2, arbitrary: tokenSoupArb.map((r) => r.line) },
        { weight: 2, arbitrary: arbitraryLineArb.map((r) => r.line) },
        { weight: 4, arbitrary: aboutPrecious },
        { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', minLength: MAX_LINE - 2, maxLength: MAX_LINE + 200 }) },
        { weight: 1, arbitrary: fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b).toString('latin1')) },
      )
      .map((line) => {
        const bytes = Buffer.from(line.replace(/\n/g, ' '), /[\u0100-\uffff]/.test(line) ? 'utf8' : 'latin1');
        // The random lines must not legitimately change the precious key: those become PINGs.
        const parsed = parseRequest(bytes.toString('latin1').replace(/\r$/, ''));
        if (parsed.ok && MUTATING.has(parsed.command.verb) && 'key' in parsed.command && parsed.command.key.id === PRECIOUS) {
          return Buffer.from('PING');
        }
        return bytes;
      });

    let runs = 0;
    let linesSent = 0;
    const tally = new Map<string, number>();
    const started = performance.now();
    await checkAsync(
      fc.asyncProperty(fc.array(lineArb, { minLength: 200, maxLength: 400 }), fc.boolean(), async (lines, oneWrite) => {
        runs++;
        linesSent += lines.length;
        const c = await rawConnect(gw.socketPath as string);
        try {
          const payload = Buffer.concat([...lines.flatMap((l) => [l, Buffer.from('\n')]), Buffer.from('PING\n')]);
          if (oneWrite) c.write(payload);
          else for (let at = 0; at < payload.length; at += 977) c.write(payload.subarray(at, at + 977));
          const replies = await c.lines(lines.length + 1, 20_000);
          lines.forEach((bytes, i) => {
            const reply = replies[i] as string;
            const want = oracle(bytes, known);
            const what = `line ${i}: ${JSON.stringify(bytes.toString('latin1').slice(0, 200))} -> ${JSON.stringify(reply.slice(0, 200))}`;
            expect(reply, what).toMatch(REPLY_RE);
            const kind = reply.startsWith('OK') ? 'OK' : (reply.split(' ')[1] as string);
            tally.set(kind, (tally.get(kind) ?? 0) + 1);
            expect(reply, what).not.toMatch(/^ERR INTERNAL /);
            if (typeof want === 'string') expect(reply, what).toBe(want);
            else expect(reply, what).toMatch(want);
          });
          // The connection is still usable and nothing extra arrived.
          expect(replies[lines.length]).toBe('OK PONG');
          expect(await c.ask('PING')).toBe('OK PONG');
        } finally {
          c.close();
        }
      }),
      12,
    );
    const elapsed = performance.now() - started;

    // The precious key is unchanged: same DEKs, old envelopes open, the stored record is byte for byte the same.
    expect(await admin.ask(`GET ${PRECIOUS}@1`)).toBe(dek1);
    expect(await admin.ask(`GET ${PRECIOUS}`)).toBe(dek2);
    gw.cache.clear();
    expect(await admin.ask(`GET ${PRECIOUS}@1`)).toBe(dek1);
    expect(await admin.ask(`GET ${PRECIOUS}@2`)).toBe(dek2);
    expect(await admin.ask(`DEC ${PRECIOUS} ${env} ${aad}`)).toBe(`OK ${plain}`);
    // Usage counters may move (ENC of the precious key is allowed); the key material and its metadata may not.
    expect(keyFields(await readFile(storePath, 'utf8'))).toEqual(keyFields(storedBefore));
    admin.close();
    console.log(
      `[server-hostile] ${runs} runs, ${linesSent} hostile lines in ${elapsed.toFixed(0)} ms; every line one reply in order; precious key unchanged; replies ${[...tally].map(([k, n]) => `${k}=${n}`).join(' ')}`,
    );
  });
});

describe('DEC error codes', () => {
  // The protocol (docs/protocol.md, from the issue's contract): a tampered envelope is DECRYPT_FAILED,
  // "or NOT_FOUND for an unknown version". A client may only DEC keys it is granted, so the version
  // numbers this reveals are its own key's.
  it('DEC of an envelope for a version the key does not have is NOT_FOUND, as documented', async () => {
    const gw = await startTestGateway(await tmp(), { keys: { autoCreate: false } });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('CREATE k')).toBe('OK 1');
    expect(await c.ask('CREATE other')).toBe('OK 1');
    expect(await c.ask('ROTATE other')).toBe('OK 2');
    const env = (await c.ask(`ENC other ${Buffer.from('x').toString('base64')}`)).slice(3);
    const altered = Buffer.from(env, 'base64');
    altered.writeUInt32BE(7, 1);
    try {
      expect(await c.ask(`DEC k ${env}`)).toBe('ERR NOT_FOUND no such key version');
      expect(await c.ask(`DEC other ${altered.toString('base64')}`)).toBe('ERR NOT_FOUND no such key version');
      // A version that exists but does not match fails authentication.
      const forV1 = Buffer.from(env, 'base64');
      forV1.writeUInt32BE(1, 1);
      expect(await c.ask(`DEC other ${forV1.toString('base64')}`)).toMatch(/^ERR DECRYPT_FAILED /);
    } finally {
      c.close();
    }
  });
});
