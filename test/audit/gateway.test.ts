import { existsSync } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { b64, okPayload, rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { fileLines } from './util.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

async function gateway(...args: Parameters<typeof startTestGateway> extends [unknown, ...infer R] ? R : never) {
  const gw = await startTestGateway(await tmp(), ...args);
  running.push(gw);
  return gw;
}

const UNAVAILABLE = 'ERR INTERNAL audit log unavailable; requests are refused';

describe('audit log through a real gateway', () => {
  it('records every request (client, verb, key id, resolved version, outcome, KEK on admin verbs), never key material or payloads', async () => {
    const gw = await gateway({ audit: { file: 'audit.log', fsync: 'always' } });
    const path = join(gw.dir, 'audit.log');
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const c = await rawConnect(gw.socketPath as string);

    const plaintext = 'card 4111-1111-1111-1111';
    const dek = okPayload(await c.ask('GET demo/key'));
    const envelope = okPayload(await c.ask(`ENC demo/key ${b64(plaintext)} ${b64('row:42')}`));
    expect(await c.ask(`DEC demo/key ${envelope} ${b64('row:42')}`)).toBe(`OK ${b64(plaintext)}`);
    expect(await c.ask('CREATE admin/key')).toBe('OK 1');
    expect(await c.ask('ROTATE admin/key')).toBe('OK 2');
    const info = await c.ask('INFO admin/key');
    expect(await c.ask('GET demo/key@7')).toMatch(/^ERR NOT_FOUND /);
    expect(await c.ask('FROB x')).toMatch(/^ERR UNKNOWN_VERB /);
    c.close();
    await gw.close(); // flushes and syncs the log

    const lines = await fileLines(path);
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const client = records[0]?.client;
    expect(client).toMatch(/^(uid:\d+|unix)$/);
    const shape = records.map(({ seq, verb, keyId, version, outcome, kek }) => ({ seq, verb, keyId, version, outcome, kek }));
    expect(shape).toEqual([
      { seq: 1, verb: 'GET', keyId: 'demo/key', version: 1, outcome: 'OK', kek: undefined }, // version resolved though not asked for
      { seq: 2, verb: 'ENC', keyId: 'demo/key', version: 1, outcome: 'OK', kek: undefined },
      { seq: 3, verb: 'DEC', keyId: 'demo/key', version: 1, outcome: 'OK', kek: undefined },
      { seq: 4, verb: 'CREATE', keyId: 'admin/key', version: 1, outcome: 'OK', kek: 'local://local-kek' },
      { seq: 5, verb: 'ROTATE', keyId: 'admin/key', version: 2, outcome: 'OK', kek: 'local://local-kek' },
      { seq: 6, verb: 'INFO', keyId: 'admin/key', version: undefined, outcome: 'OK', kek: undefined },
      { seq: 7, verb: 'GET', keyId: 'demo/key', version: 7, outcome: 'NOT_FOUND', kek: undefined },
      { seq: 8, verb: '-', keyId: undefined, version: undefined, outcome: 'UNKNOWN_VERB', kek: undefined },
    ]);
    for (const r of records) {
      expect(r.client).toBe(client);
      expect(Date.parse(r.time as string)).not.toBeNaN();
      expect(typeof r.latencyMs).toBe('number');
      expect(
        Object.keys(r).every((k) =>
          ['seq', 'prev', 'time', 'client', 'verb', 'keyId', 'version', 'outcome', 'latencyMs', 'kek'].includes(k),
        ),
      ).toBe(true);
    }

    const text = await readFile(path, 'utf8');
    const secrets = {
      dekBase64: dek,
      dekHex: Buffer.from(dek, 'base64').toString('hex'),
      plaintext,
      plaintextBase64: b64(plaintext),
      envelope,
      aad: b64('row:42'),
      info: okPayload(info),
    };
    for (const [name, secret] of Object.entries(secrets)) expect(text.includes(secret), name).toBe(false);
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, records: 8 });
  });

  it('continues the chain across a gateway restart', async () => {
    const dir = await tmp();
    for (let round = 0; round < 2; round++) {
      const gw = await startTestGateway(dir, { audit: { file: 'audit.log' } });
      const c = await rawConnect(gw.socketPath as string);
      expect(await c.ask('PING')).toBe('OK PONG');
      c.close();
      await gw.close();
    }
    const records = (await fileLines(join(dir, 'audit.log'))).map((l) => JSON.parse(l));
    expect(records.map((r) => [r.seq, r.verb])).toEqual([
      [1, 'PING'],
      [2, 'PING'],
    ]);
    expect(await verifyAuditFile(join(dir, 'audit.log'))).toMatchObject({ ok: true, records: 2 });
  });

  it('without audit.file there is no audit log', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('PING')).toBe('OK PONG');
    c.close();
    expect(existsSync(join(gw.dir, 'audit.log'))).toBe(false);
  });

  it('a file that cannot be opened stops start-up with a message naming it', async () => {
    const dir = await tmp();
    await mkdir(join(dir, 'logs-are-a-dir'));
    await expect(startTestGateway(dir, { audit: { file: 'logs-are-a-dir' } })).rejects.toThrow(
      `cannot open audit log ${join(dir, 'logs-are-a-dir')}`,
    );
    // Nothing is left listening or locked: a gateway starts on the same folder.
    running.push(await startTestGateway(dir));
  });

  it.runIf(existsSync('/dev/full'))(
    'fail closed: when writes fail (ENOSPC on /dev/full), requests get ERR INTERNAL audit log unavailable',
    async () => {
      const gw = await gateway({ audit: { file: '/dev/full', fsync: 'never' } });
      const c = await rawConnect(gw.socketPath as string);
      // The first reply goes out before its record is written; the write fails just after.
      expect(await c.ask('PING')).toBe('OK PONG');
      let reply = '';
      for (let i = 0; i < 200 && reply !== UNAVAILABLE; i++) reply = await c.ask('GET demo/key');
      expect(reply).toBe(UNAVAILABLE);
      expect(await c.ask('PING')).toBe(UNAVAILABLE);
      const fatal = gw.logLines.map((l) => JSON.parse(l)).find((l) => l.level === 60);
      expect(fatal).toMatchObject({ file: '/dev/full', code: 'ENOSPC', msg: expect.stringMatching(/audit log unavailable/) });
      c.close();
    },
  );

  it.runIf(existsSync('/dev/full'))('fail open: when writes fail, requests are still served and a warning is logged', async () => {
    const gw = await gateway({ audit: { file: '/dev/full', fsync: 'never', failOpen: true } });
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('PING')).toBe('OK PONG');
    const logs = () => gw.logLines.map((l) => JSON.parse(l) as { level: number; msg: string; dropped?: number });
    for (let i = 0; i < 200 && !logs().some((l) => /records dropped/.test(l.msg)); i++) expect(await c.ask('GET demo/key')).toMatch(/^OK /);
    expect(await c.ask('PING')).toBe('OK PONG');
    expect(logs().find((l) => l.level === 40 && /audit log write failed/.test(l.msg))).toBeDefined();
    expect(logs().some((l) => l.level === 60)).toBe(false);
    c.close();
  });
});
