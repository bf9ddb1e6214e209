/**
 * No key material or payload ever reaches a log line, an ERR text, INFO/LIST output or
 * the audit log. A gateway with debug-level logs (and an audit file, when the config
 * has one) runs every verb and many error paths; then every DEK (GET and GET id@v of
 * every version), every plaintext, AAD and envelope sent, every wrapped blob and
 * commitment tag from the key store, and the local KEK files' bytes are searched for,
 * as base64 (at each byte offset), base64url, hex (both cases) and raw latin1, by any
 * 12-16 character window (so partial leaks count too).
 */
import { randomBytes } from 'node:crypto';
import { readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureLocalKek } from '../../adapters/local/index.js';
import { ConfigSchema, type ConfigInput } from '../../src/config/schema.js';
import { fileNameFor } from '../../src/keystore/file/index.js';
import { ERROR_CODES } from '../../src/protocol/errors.js';
import { fakeKms, type FakeMode } from '../helpers/fake-adapter.js';
import { rawConnect, startTestGateway, type RawConn, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

const MAX_LINE = 4096;
const AUDIT_FILE = 'audit.log';
/** Whether this tree's config has an audit log (src/audit); the test then turns it on and searches it too. */
const AUDIT_SUPPORTED = 'audit' in (ConfigSchema.shape as Record<string, unknown>);

const b64 = (b: Buffer) => b.toString('base64');

/** Every window of `w` characters of `text`. */
function windowsOf(text: string, w: number): string[] {
  const out: string[] = [];
  for (let i = 0; i + w <= text.length; i++) out.push(text.slice(i, i + w));
  return out;
}

/** The encodings a leak could take; base64 at three byte offsets so any aligned substring matches. */
function forms(secret: Buffer): Array<{ form: string; text: string; w: number }> {
  const out: Array<{ form: string; text: string; w: number }> = [];
  for (let k = 0; k < 3; k++) {
    out.push({ form: `base64+${k}`, text: secret.subarray(k).toString('base64').replace(/=+$/, ''), w: 16 });
    out.push({ form: `base64url+${k}`, text: secret.subarray(k).toString('base64url'), w: 16 });
  }
  out.push({ form: 'hex', text: secret.toString('hex'), w: 16 });
  out.push({ form: 'HEX', text: secret.toString('hex').toUpperCase(), w: 16 });
  out.push({ form: 'latin1', text: secret.toString('latin1'), w: 12 });
  return out;
}

/** A searchable text: all its 12- and 16-character windows. */
class Haystack {
  private readonly w12 = new Set<string>();
  private readonly w16 = new Set<string>();
  size = 0;
  constructor(readonly name: string) {}
  add(text: string): void {
    this.size += text.length;
    for (const s of windowsOf(text, 12)) this.w12.add(s);
    for (const s of windowsOf(text, 16)) this.w16.add(s);
  }
  /** The first form of `secret` found here, if any. */
  find(secret: Buffer): string | undefined {
    for (const f of forms(secret)) {
      const set = f.w === 12 ? this.w12 : this.w16;
      for (const s of windowsOf(f.text, f.w)) if (set.has(s)) return `${f.form} window ${JSON.stringify(s)}`;
    }
    return undefined;
  }
}

interface Exchange {
  readonly request: string;
  readonly reply: string;
}

describe('no key material or payload in logs, errors, INFO/LIST or the audit log', () => {
  it('exercises every verb and error path, then finds no secret anywhere it must not be', async () => {
    const dir = await tmp();
    const overrides = {
      keys: { autoCreate: true },
      limits: { maxLineBytes: MAX_LINE },
      // Every failure mode in a row: the breaker would turn the later ones into fast KMS_UNAVAILABLE.
      kms: { timeoutMs: 200, breaker: { failures: 1000 } },
      log: { level: 'debug' },
      ...(AUDIT_SUPPORTED ? { audit: { file: AUDIT_FILE, fsync: 'always' } } : {}),
    } as ConfigInput;
    let gw = await startTestGateway(dir, overrides);
    running.push(gw);
    const dataDir = join(dir, 'data');
    await ensureLocalKek(join(dataDir, 'kek-b'));

    const exchanges: Exchange[] = [];
    const deks = new Map<string, Buffer>(); // "id@v" -> DEK
    const payloads: Buffer[] = []; // plaintexts, AADs and envelopes sent
    const wrapped = new Set<string>(); // base64 blobs and commitment tags seen in the store
    const logs: string[] = [];

    let c: RawConn = await rawConnect(gw.socketPath as string);
    const ask = async (request: string, want?: RegExp | string): Promise<string> => {
      const reply = await c.ask(request);
      exchanges.push({ request, reply });
      if (want !== undefined) {
        if (typeof want === 'string') expect(reply, request.slice(0, 120)).toBe(want);
        else expect(reply, request.slice(0, 120)).toMatch(want);
      }
      return reply;
    };
    const ok = async (request: string) => (await ask(request, /^OK/)).slice(3);
    const getDek = async (ref: string) => {
      const dek = Buffer.from(await ok(`GET ${ref}`), 'base64');
      expect(dek).toHaveLength(32);
      if (ref.includes('@')) deks.set(ref, dek);
      return dek;
    };
    const secretBytes = (n: number) => {
      const b = randomBytes(n);
      payloads.push(b);
      return b;
    };
    const snapshotStore = async () => {
      for (const name of await readdir(join(dataDir, 'keys'))) {
        if (!name.endsWith('.json')) continue;
        const record = JSON.parse(await readFile(join(dataDir, 'keys', name), 'utf8')) as {
          versions: Array<{ wraps: Array<{ wrapped: string }>; commit: string | null }>;
        };
        for (const v of record.versions) {
          for (const w of v.wraps) wrapped.add(w.wrapped);
          if (v.commit) wrapped.add(v.commit);
        }
        // Every record holds a blob: the search below must have something to look for.
        if (record.versions.some((v) => v.wraps.length > 0)) expect(wrapped.size).toBeGreaterThan(0);
      }
    };

    // --- every verb, happy paths ---------------------------------------------
    await ask('PING', 'OK PONG');
    await ask('CREATE app/a', 'OK 1');
    await ask('ROTATE app/a', 'OK 2');
    await ask('ROTATE app/a local://kek-b', 'OK 3');
    await ask('CREATE fk fake://kek', 'OK 1');
    await ask('CREATE fk2 fake://kek', 'OK 1');
    await getDek('auto/x'); // created on first use
    for (const ref of ['app/a', 'app/a@1', 'app/a@2', 'app/a@3', 'fk', 'fk@1', 'fk2@1', 'auto/x@1']) await getDek(ref);
    await snapshotStore();

    const envelopes: Array<{ key: string; env: string; aad?: string; plain: string }> = [];
    const plaintexts = [secretBytes(1), secretBytes(31), secretBytes(200), Buffer.from('card 4111 1111 1111 1111 exp 12/29 cvv 737')];
    payloads.push(plaintexts[3] as Buffer);
    for (const key of ['app/a', 'app/a@1', 'fk', 'auto/x']) {
      for (const plain of plaintexts) {
        const aad = secretBytes(16);
        const env = await ok(`ENC ${key} ${b64(plain)} ${b64(aad)}`);
        payloads.push(Buffer.from(env, 'base64'));
        const id = key.split('@')[0] as string;
        envelopes.push({ key: id, env, aad: b64(aad), plain: b64(plain) });
        await ask(`DEC ${id} ${env} ${b64(aad)}`, `OK ${b64(plain)}`);
      }
      const env = await ok(`ENC ${key} ${b64(plaintexts[2] as Buffer)}`);
      payloads.push(Buffer.from(env, 'base64'));
      envelopes.push({ key: key.split('@')[0] as string, env, plain: b64(plaintexts[2] as Buffer) });
    }
    await ask('INFO app/a', /^OK \{/);
    await ask('INFO fk', /^OK \{/);
    await ask('INFO auto/x', /^OK \{/);
    await ask('LIST', /^OK \[/);
    await ask('LIST app/', /^OK \[/);

    // --- error paths -------------------------------------------------------------
    const dekText = b64(deks.get('app/a@1') as Buffer);
    const e0 = envelopes[0] as { key: string; env: string; aad: string; plain: string };
    const tampered = Buffer.from(e0.env, 'base64');
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] as number) ^ 1;
    const wrongAad = secretBytes(16);
    const oversize = secretBytes(3200);
    for (const [request, code] of [
      // bad base64 carrying secrets: the text must not echo them
      [`ENC app/a ${dekText.slice(0, -1)}*`, 'BAD_REQUEST'],
      [`ENC app/a ${dekText.replace(/=$/, '')}`, 'BAD_REQUEST'],
      [`ENC app/a ${e0.plain} ${dekText}x`, 'BAD_REQUEST'],
      [`DEC app/a ${e0.env}x`, 'BAD_REQUEST'],
      [`DEC app/a ${dekText}`, 'DECRYPT_FAILED'],
      [`ENC app/a ${Buffer.from(dekText).toString('hex')}!`, 'BAD_REQUEST'],
      // tampered, truncated, wrong AAD, wrong version, wrong key
      [`DEC app/a ${b64(tampered)} ${e0.aad}`, 'DECRYPT_FAILED'],
      [`DEC app/a ${b64(Buffer.from(e0.env, 'base64').subarray(0, -1))} ${e0.aad}`, 'DECRYPT_FAILED'],
      [`DEC app/a ${e0.env} ${b64(wrongAad)}`, 'DECRYPT_FAILED'],
      [`DEC app/a ${e0.env}`, 'DECRYPT_FAILED'],
      [`DEC app/a@2 ${e0.env} ${e0.aad}`, 'DECRYPT_FAILED'],
      // fk has no version 3: NOT_FOUND, as documented.
      [`DEC fk ${e0.env} ${e0.aad}`, '(DECRYPT_FAILED|NOT_FOUND)'],
      // unknown keys and versions
      ['GET nope@1', 'NOT_FOUND'],
      ['GET app/a@9', 'NOT_FOUND'],
      ['INFO nope', 'NOT_FOUND'],
      [`DEC nope ${e0.env}`, 'NOT_FOUND'],
      ['DESTROY nope@1', 'NOT_FOUND'],
      ['REWRAP nope local://kek-b', 'NOT_FOUND'],
      // malformed lines, unknown verbs, secrets in odd places
      [`${dekText} app/a`, 'UNKNOWN_VERB'],
      [`GET ${dekText}`, 'BAD_REQUEST'],
      [`GET app/a ${dekText}`, 'BAD_REQUEST'],
      [`AUTH ${dekText}`, 'BAD_REQUEST'],
      [`CREATE app/a`, 'EXISTS'],
      // (A KEK URI is metadata, logged and audited as given: a well-formed one carrying a secret is not tested.)
      [`CREATE app/b nope://kek`, 'BAD_REQUEST'],
      // A scheme the URI grammar refuses (`_`), so the secret after it is always in a malformed URI:
      // `local:/${dekText}` became a well-formed `local://…` whenever the DEK's base64 began with '/'.
      [`CREATE app/c lo_cal://${dekText}`, 'BAD_REQUEST'],
      [`ROTATE app/a local://missing-kek`, 'KMS_DENIED'],
      [`REWRAP app/a local://missing-kek`, 'KMS_DENIED'],
      ['DESTROY app/a@3', 'BAD_REQUEST'],
      [`ENC app/a  ${e0.plain}`, 'BAD_REQUEST'],
      [`ENC app/a ${e0.plain}\x01`, 'BAD_REQUEST'],
      // a line over the cap whose payload is a secret
      [`ENC app/a ${b64(oversize)}`, 'TOO_LARGE'],
    ] as const) {
      await ask(request, new RegExp(`^ERR ${code} \\S`));
    }

    // --- KMS failures through the fake adapter -----------------------------------
    const eFk = envelopes.find((e) => e.key === 'fk' && e.aad !== undefined) as { env: string; aad: string };
    for (const [mode, code] of [
      ['deny', 'KMS_DENIED'],
      ['down', 'KMS_UNAVAILABLE'],
      ['throttle', 'THROTTLED'],
      ['raw-error', 'INTERNAL'],
      ['hang', 'KMS_UNAVAILABLE'],
      ['short-dek', 'INTERNAL'],
    ] as Array<[FakeMode, string]>) {
      gw.cache.clear();
      fakeKms.mode = mode;
      const want = new RegExp(`^ERR ${code} \\S`);
      await ask('GET fk', want);
      await ask(`ENC fk ${b64(plaintexts[1] as Buffer)}`, want);
      await ask(`DEC fk ${eFk.env} ${eFk.aad}`, want);
      if (mode !== 'short-dek') {
        await ask('ROTATE fk', want);
        await ask('REWRAP fk local://kek-b', want);
        await ask('CREATE fk3 fake://kek', want);
      }
    }
    fakeKms.mode = 'ok';
    gw.cache.clear();
    await getDek('fk@1');

    // --- rewrap and destroy --------------------------------------------------------
    await ask('REWRAP app/a local://kek-b', 'OK 2');
    await ask('REWRAP fk local://kek-b', 'OK 1');
    await ask('REWRAP fk2@1 local://local-kek', 'OK 1');
    await ask('REWRAP app/a nope://x', /^ERR BAD_REQUEST /);
    await snapshotStore();
    await ask('DESTROY app/a@1', 'OK 1');
    await ask('DESTROY app/a@1', 'OK 1');
    const eV1 = envelopes.find((e) => e.key === 'app/a' && Buffer.from(e.env, 'base64').readUInt32BE(1) === 1) as {
      env: string;
      aad?: string;
    };
    await ask(`DEC app/a ${eV1.env}${eV1.aad ? ` ${eV1.aad}` : ''}`, /^ERR DECRYPT_FAILED /);
    await ask('GET app/a@1', /^ERR NOT_FOUND /);
    await ask('INFO app/a', /^OK \{/);
    await ask('ROTATE fk', 'OK 2');
    await getDek('fk@2');
    await ask('CREATE fk4 fake://kek', 'OK 1');
    await ask('CREATE fk5 fake://kek', 'OK 1');
    await getDek('fk4@1');
    await getDek('fk5@1');
    await ask('LIST', /^OK \[/);
    await snapshotStore();

    // --- a stored blob swapped between ids: the commitment check fails ----------
    c.close();
    logs.push(...gw.logLines);
    await gw.close();
    running.pop();
    const fk4Path = join(dataDir, 'keys', fileNameFor('fk4'));
    const fk4 = JSON.parse(await readFile(fk4Path, 'utf8'));
    const fk5 = JSON.parse(await readFile(join(dataDir, 'keys', fileNameFor('fk5')), 'utf8'));
    fk4.versions[0].wraps = fk5.versions[0].wraps;
    await writeFile(fk4Path, JSON.stringify(fk4));
    gw = await startTestGateway(dir, overrides);
    running.push(gw);
    c = await rawConnect(gw.socketPath as string);
    await ask('GET fk4', 'ERR DECRYPT_FAILED stored key failed its commitment check');
    await ask(`DEC fk4 ${eFk.env} ${eFk.aad}`, /^ERR DECRYPT_FAILED /);
    await snapshotStore();

    // --- collect every DEK of every version (GET id@v) -----------------------------
    const ids = JSON.parse(await ok('LIST')) as string[];
    for (const id of ids) {
      const info = JSON.parse(await ok(`INFO ${id}`)) as { versions: Array<{ version: number; state: string }> };
      for (const v of info.versions) if (v.state === 'enabled' && id !== 'fk4') await getDek(`${id}@${v.version}`);
    }
    c.close();
    logs.push(...gw.logLines);
    await gw.close();
    running.pop();

    const keks = [await readFile(join(dataDir, 'local-kek')), await readFile(join(dataDir, 'kek-b'))];
    for (const k of keks) expect(k).toHaveLength(32);

    // --- where secrets must not be ---------------------------------------------------
    const logHay = new Haystack('log lines');
    for (const line of logs) logHay.add(line);
    const errHay = new Haystack('ERR texts');
    const infoHay = new Haystack('INFO/LIST output');
    const replyHay = new Haystack('every reply');
    for (const { request, reply } of exchanges) {
      expect(reply).toMatch(new RegExp(`^(OK( [\\x20-\\x7e]+)?|ERR (${ERROR_CODES.join('|')}) [\\x20-\\x7e]+)$`));
      replyHay.add(reply);
      if (reply.startsWith('ERR ')) errHay.add(reply);
      if (/^(INFO|LIST)\b/.test(request) && reply.startsWith('OK')) {
        infoHay.add(reply);
        expect(reply).not.toMatch(/"(wrapped|commit|dek|key)"/);
      }
    }
    // No raw SDK message ever reaches a client (it may reach the log).
    expect(exchanges.filter((e) => /AKIA|exploded|aborted/.test(e.reply))).toEqual([]);

    // Every other file the gateway wrote (the audit log, if any), besides the store and the KEKs.
    const fileHay = new Haystack('other files');
    const storeHay = new Haystack('key store files');
    const otherFiles: string[] = [];
    const walk = async (d: string): Promise<void> => {
      for (const name of await readdir(d)) {
        const path = join(d, name);
        const st = await stat(path);
        if (st.isDirectory()) await walk(path);
        else if (!st.isFile()) continue;
        else if (path.startsWith(join(dataDir, 'keys'))) storeHay.add((await readFile(path)).toString('latin1'));
        else if (path !== join(dataDir, 'local-kek') && path !== join(dataDir, 'kek-b')) {
          otherFiles.push(relative(dir, path));
          fileHay.add((await readFile(path)).toString('latin1'));
        }
      }
    };
    await walk(dir);
    if (AUDIT_SUPPORTED) {
      expect(otherFiles).toContain(AUDIT_FILE);
      expect((await readFile(join(dir, AUDIT_FILE), 'utf8')).split('\n').length).toBeGreaterThan(exchanges.length / 2);
    }

    const findings: string[] = [];
    const search = (what: string, secrets: Iterable<Buffer>, hays: Haystack[]) => {
      let n = 0;
      for (const secret of secrets) {
        n++;
        for (const hay of hays) {
          const found = hay.find(secret);
          if (found) findings.push(`${what} ${secret.toString('hex').slice(0, 16)}... found in ${hay.name} as ${found}`);
        }
      }
      return n;
    };
    const wrappedBufs = [...wrapped].map((w) => Buffer.from(w, 'base64'));
    const everywhere = [logHay, errHay, infoHay, fileHay];
    const nDeks = search('DEK', deks.values(), [...everywhere, storeHay]);
    const nPayloads = search('payload', payloads, everywhere);
    const nWrapped = search('wrapped blob or commitment tag', wrappedBufs, [...everywhere, replyHay]);
    search('local KEK', keks, [...everywhere, replyHay, storeHay]);
    console.log(
      `[no-secrets] ${exchanges.length} requests (${exchanges.filter((e) => e.reply.startsWith('ERR')).length} ERR), ` +
        `${logs.length} debug log lines, ${otherFiles.length} other files (${otherFiles.join(', ') || 'none'}); ` +
        `searched ${nDeks} DEKs, ${nPayloads} payloads, ${nWrapped} wrapped blobs/tags, ${keks.length} KEK files ` +
        `in logs ${logHay.size} B, ERR texts ${errHay.size} B, INFO/LIST ${infoHay.size} B, other files ${fileHay.size} B, store ${storeHay.size} B: ` +
        `${findings.length} findings`,
    );
    expect(findings).toEqual([]);
    // Sanity: the search does find a secret where one is.
    const planted = new Haystack('planted');
    planted.add(`{"msg":"x","v":"${(deks.get('app/a@2') as Buffer).subarray(5, 20).toString('hex')}"}`);
    expect(planted.find(deks.get('app/a@2') as Buffer)).toBeDefined();
    expect(deks.size).toBeGreaterThanOrEqual(9);
  });
});
