import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile, stat, truncate, writeFile, appendFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ZERO_HASH } from '../../src/audit/chain.js';
import { openAuditFile } from '../../src/audit/file.js';
import { AuditLog } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { captureLogger, deferred, fileLines, rec, spyOpen, turn, writeRecords, type Call } from './util.js';

const tmp = useTmpDirs();
const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');
const file = async () => join(await tmp(), 'audit.log');

describe('AuditLog: records', () => {
  it('writes one JSON line per record with seq and prev first, and only the record fields', async () => {
    const path = await file();
    const { logger } = captureLogger();
    const log = await AuditLog.open({ file: path, logger, fsync: 'never' });
    log.record(rec(1, { verb: 'CREATE', keyId: 'app/a', version: 1, kek: 'local://local-kek' }));
    // A field the gateway does not send (a payload, say) never reaches the file.
    log.record({ ...rec(2), payload: 'c2VjcmV0' } as never);
    log.record({ time: 't', client: 'tcp:127.0.0.1', verb: '-', outcome: 'BAD_REQUEST', latencyMs: 0.01 });
    await log.close();
    const lines = await fileLines(path);
    expect(lines).toHaveLength(3);
    expect(lines[0]).toBe(
      `{"seq":1,"prev":"${ZERO_HASH}","time":"2026-11-27T12:00:01.000Z","client":"uid:1000","verb":"CREATE","keyId":"app/a","version":1,"outcome":"OK","latencyMs":0.05,"kek":"local://local-kek"}`,
    );
    expect(lines[1]).not.toContain('payload');
    expect(JSON.parse(lines[2] as string)).toEqual({
      seq: 3,
      prev: sha256(lines[1] as string),
      time: 't',
      client: 'tcp:127.0.0.1',
      verb: '-',
      outcome: 'BAD_REQUEST',
      latencyMs: 0.01,
    });
    expect((await stat(path)).mode & 0o777).toBe(0o600);
  });

  it('record() returns before anything is written; one append per batch, soon after', async () => {
    const path = await file();
    const calls: Call[] = [];
    const log = await AuditLog.open({ file: path, logger: captureLogger().logger, fsync: 'never', openFile: spyOpen(calls) });
    for (let i = 1; i <= 100; i++) log.record(rec(i));
    expect(calls).toEqual([]);
    expect(readFileSync(path).length).toBe(0);
    await turn();
    await log.flush();
    expect(calls).toEqual(['append']);
    expect(await fileLines(path)).toHaveLength(100);
    await log.close();
  });

  it("a record's text survives any client name (quotes, LF, non-ASCII) on one line", async () => {
    const path = await file();
    const log = await AuditLog.open({ file: path, logger: captureLogger().logger, fsync: 'never' });
    log.record(rec(1, { client: 'cert:"evil"\n{"seq":99}\u2028é\ud800' }));
    log.record(rec(2));
    await log.close();
    expect(await fileLines(path)).toHaveLength(2);
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, records: 2 });
  });
});

describe('AuditLog: the chain across close and reopen', () => {
  it('continues seq and prev from the last line', async () => {
    const path = await file();
    await writeRecords(path, 3);
    await writeRecords(path, 2, {}, 4);
    const lines = await fileLines(path);
    expect(lines.map((l) => JSON.parse(l).seq)).toEqual([1, 2, 3, 4, 5]);
    expect(JSON.parse(lines[3] as string).prev).toBe(sha256(lines[2] as string));
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, records: 5, restarts: [] });
  });

  it('a last line whole but without its LF is continued after adding the LF', async () => {
    const path = await file();
    await writeRecords(path, 2);
    await truncate(path, (await stat(path)).size - 1);
    await writeRecords(path, 1, {}, 3);
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, records: 3, restarts: [] });
  });

  it('a torn last line: a chain-restart record whose prev is the hash of the torn bytes', async () => {
    const path = await file();
    await writeRecords(path, 3);
    const before = await readFile(path);
    await truncate(path, before.length - 25);
    const tornText = (await fileLines(path))[2] as string;
    expect((await verifyAuditFile(path)).problem?.line).toBe(3);

    const { logger, lines: logs } = captureLogger();
    const log = await AuditLog.open({ file: path, logger, fsync: 'never', now: () => new Date('2026-11-28T00:00:00Z') });
    // Written and synced during open, before any request.
    const restartLine = (await fileLines(path))[3] as string;
    expect(JSON.parse(restartLine)).toEqual({
      seq: 3,
      prev: sha256(tornText),
      time: '2026-11-28T00:00:00.000Z',
      event: 'chain-restart',
      reason: expect.stringMatching(/not valid JSON/),
    });
    expect(logs.find((l) => l.level === 40 && /chain-restart/.test(l.msg))).toMatchObject({ file: path, seq: 3 });
    log.record(rec(4));
    await log.close();
    const result = await verifyAuditFile(path);
    expect(result).toMatchObject({ ok: true, records: 4, restarts: [{ line: 4, tornLine: 3, tornBytes: tornText.length }] });
    expect(JSON.parse((await fileLines(path))[4] as string)).toMatchObject({ seq: 4, prev: sha256(restartLine) });
  });

  it('a torn first line, and a torn line of NUL bytes ending in LF, restart the chain too', async () => {
    const path = await file();
    await writeFile(path, '{"seq":1,"pr');
    await writeRecords(path, 1);
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, records: 2, restarts: [{ line: 2, tornLine: 1 }] });

    const path2 = await file();
    await writeRecords(path2, 2);
    await appendFile(path2, Buffer.concat([Buffer.alloc(4096), Buffer.from('\n')]));
    await writeRecords(path2, 1);
    const lines = await fileLines(path2);
    expect(JSON.parse(lines[3] as string)).toMatchObject({ seq: 3, event: 'chain-restart', prev: sha256(Buffer.alloc(4096)) });
    expect(await verifyAuditFile(path2)).toMatchObject({ ok: true, records: 4, restarts: [{ line: 4, tornLine: 3, tornBytes: 4096 }] });
  });

  it('refuses a file whose last line is JSON but not an audit record, naming the file', async () => {
    const path = await file();
    await writeFile(path, '{"hello":"world"}\n');
    await expect(AuditLog.open({ file: path, logger: captureLogger().logger })).rejects.toThrow(
      `cannot use audit log ${path}: its last line is JSON but not an audit record`,
    );
  });

  it('refuses a path it cannot open (a directory), naming it', async () => {
    const dir = await tmp();
    await mkdir(join(dir, 'sub'));
    await expect(AuditLog.open({ file: join(dir, 'sub'), logger: captureLogger().logger })).rejects.toThrow(
      `cannot open audit log ${join(dir, 'sub')}: EISDIR`,
    );
  });
});

describe('AuditLog: fsync policies', () => {
  it('always: each batch is synced before the next one is written', async () => {
    const path = await file();
    const calls: Call[] = [];
    const syncStarted = deferred();
    const held = deferred();
    const hooks = {
      sync: () => {
        syncStarted.resolve();
        return held.promise;
      },
    };
    const log = await AuditLog.open({ file: path, logger: captureLogger().logger, fsync: 'always', openFile: spyOpen(calls, hooks) });
    log.record(rec(1));
    log.record(rec(2));
    await syncStarted.promise;
    expect(calls).toEqual(['append', 'sync']);
    log.record(rec(3));
    await turn(); // its batch is serialized now, and would be appended at once if nothing waited for the sync
    expect(calls).toEqual(['append', 'sync']);
    held.resolve();
    await log.flush();
    expect(calls).toEqual(['append', 'sync', 'append', 'sync']);
    await log.close();
    expect(calls.slice(4)).toEqual(['sync', 'close']);
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, records: 3 });
  });

  it('interval: syncs on the timer only when something was written since the last sync', async () => {
    const path = await file();
    const calls: Call[] = [];
    let tick: (() => void) | undefined;
    let period: number | undefined;
    let stopped = false;
    const every = (ms: number, fn: () => void) => {
      period = ms;
      tick = fn;
      return () => void (stopped = true);
    };
    const log = await AuditLog.open({
      file: path,
      logger: captureLogger().logger,
      fsync: 'interval',
      fsyncIntervalMs: 250,
      every,
      openFile: spyOpen(calls),
    });
    expect(period).toBe(250);
    tick?.();
    expect(calls).toEqual([]);
    log.record(rec(1));
    await log.flush();
    expect(calls).toEqual(['append']);
    tick?.();
    await turn();
    expect(calls).toEqual(['append', 'sync']);
    tick?.();
    await turn();
    expect(calls).toEqual(['append', 'sync']);
    await log.close();
    expect(stopped).toBe(true);
    expect(calls).toEqual(['append', 'sync', 'sync', 'close']);
  });

  it('never: no sync until close, which syncs once', async () => {
    const path = await file();
    const calls: Call[] = [];
    let timers = 0;
    const log = await AuditLog.open({
      file: path,
      logger: captureLogger().logger,
      fsync: 'never',
      every: () => (timers++, () => undefined),
      openFile: spyOpen(calls),
    });
    for (let i = 1; i <= 3; i++) {
      log.record(rec(i));
      await log.flush();
    }
    expect(calls).toEqual(['append', 'append', 'append']);
    expect(timers).toBe(0);
    await log.close();
    expect(calls).toEqual(['append', 'append', 'append', 'sync', 'close']);
  });
});

describe('AuditLog: when records cannot be kept', () => {
  const eio = () => Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });

  it('fail closed: a failing write makes it unavailable, with a fatal log line', async () => {
    const path = await file();
    const { logger, lines } = captureLogger();
    const log = await AuditLog.open({ file: path, logger, fsync: 'never', openFile: spyOpen([], { append: () => Promise.reject(eio()) }) });
    expect(log.available).toBe(true);
    log.record(rec(1));
    await log.flush();
    expect(log.available).toBe(false);
    expect(lines.find((l) => l.level === 60)).toMatchObject({
      file: path,
      op: 'write',
      code: 'EIO',
      msg: expect.stringMatching(/requests are refused/),
    });
    log.record(rec(2)); // a request that was already running
    expect(log.dropped).toBe(2);
    await log.close();
  });

  it('fail closed: a failing fsync makes it unavailable', async () => {
    const path = await file();
    const { logger, lines } = captureLogger();
    const log = await AuditLog.open({ file: path, logger, fsync: 'always', openFile: spyOpen([], { sync: () => Promise.reject(eio()) }) });
    log.record(rec(1));
    await log.flush();
    expect(log.available).toBe(false);
    expect(lines.find((l) => l.level === 60)).toMatchObject({ op: 'fsync' });
    await log.close();
  });

  it('fail closed: past the buffer cap it refuses new requests but still writes what it holds', async () => {
    const path = await file();
    const { logger, lines } = captureLogger();
    const held = deferred();
    const log = await AuditLog.open({
      file: path,
      logger,
      fsync: 'never',
      maxBufferBytes: 2000,
      openFile: spyOpen([], { append: () => held.promise }),
    });
    log.record(rec(1));
    await turn(); // batch 1 is being written, and held
    for (let i = 2; i <= 20; i++) log.record(rec(i));
    await turn();
    expect(log.available).toBe(false);
    expect(lines.find((l) => l.level === 60)?.msg).toMatch(/buffer cap/);
    held.resolve();
    await log.close();
    expect(log.dropped).toBe(0);
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, records: 20 });
  });

  it('fail open: stays available past the cap, drops and counts new records, keeps the chain whole', async () => {
    const path = await file();
    const { logger, lines } = captureLogger();
    const held = deferred();
    const log = await AuditLog.open({
      file: path,
      logger,
      fsync: 'never',
      failOpen: true,
      maxBufferBytes: 2000,
      openFile: spyOpen([], { append: () => held.promise }),
    });
    log.record(rec(1));
    await turn();
    for (let i = 2; i <= 40; i++) log.record(rec(i));
    await turn();
    expect(log.available).toBe(true);
    expect(log.dropped).toBeGreaterThan(0);
    expect(lines.some((l) => l.level === 40 && /dropped/.test(l.msg))).toBe(true);
    expect(lines.some((l) => l.level === 60)).toBe(false);
    held.resolve();
    await log.close();
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, records: 40 - log.dropped });
  });

  it('fail open: a failing write leaves it available, counting dropped records, with warnings', async () => {
    const path = await file();
    const { logger, lines } = captureLogger();
    const log = await AuditLog.open({
      file: path,
      logger,
      fsync: 'never',
      failOpen: true,
      openFile: spyOpen([], { append: () => Promise.reject(eio()) }),
    });
    log.record(rec(1));
    await log.flush();
    expect(log.available).toBe(true);
    for (let i = 2; i <= 12; i++) log.record(rec(i));
    await log.flush();
    expect(log.dropped).toBe(12);
    const warnings = lines.filter((l) => l.level === 40);
    expect(warnings[0]).toMatchObject({ op: 'write', msg: expect.stringMatching(/audit.failOpen/) });
    // Warnings at 1 and 10 dropped records: visible, not one per request.
    expect(warnings.filter((l) => /records dropped/.test(l.msg)).map((l) => l.dropped)).toEqual([1, 10]);
    expect(lines.some((l) => l.level === 60)).toBe(false);
    await log.close();
  });

  it('closed: unavailable, later records are dropped; close is idempotent', async () => {
    const path = await file();
    const log = await AuditLog.open({ file: path, logger: captureLogger().logger, fsync: 'never' });
    log.record(rec(1));
    await Promise.all([log.close(), log.close()]);
    expect(log.available).toBe(false);
    log.record(rec(2));
    expect(log.dropped).toBe(1);
    expect(await fileLines(path)).toHaveLength(1);
  });

  it('openAuditFile appends with O_APPEND and creates the file with the given mode', async () => {
    const path = await file();
    await writeFile(path, 'x\n', { mode: 0o644 });
    const f = await openAuditFile(path, 0o600);
    await f.append(Buffer.from('y\n'));
    await f.sync();
    await f.close();
    expect(await readFile(path, 'utf8')).toBe('x\ny\n');
  });
});
