import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/audit/log.js';
import { verifyAuditFile } from '../../src/audit/verify.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { captureLogger, rec } from './util.js';

const tmp = useTmpDirs();

describe('AuditLog.reopen (rotation)', () => {
  it('after a rename, writes on in a new file whose chain continues the old one; both verify in order', async () => {
    const dir = await tmp();
    const path = join(dir, 'audit.log');
    const log = await AuditLog.open({ file: path, logger: captureLogger().logger, fsync: 'interval' });
    expect(await log.reopen()).toBe('unchanged'); // not rotated: nothing to do
    for (let i = 1; i <= 3; i++) log.record(rec(i));
    await log.flush();
    await rename(path, `${path}.1`);
    log.record(rec(4)); // queued before the reopen: still chained in order
    const reopening = log.reopen();
    log.record(rec(5)); // during the reopen
    expect(await reopening).toBe('reopened');
    log.record(rec(6));
    await log.close();

    const old = await verifyAuditFile(`${path}.1`);
    expect(old.ok).toBe(true);
    const next = await verifyAuditFile(path, { after: old.end as { seq: number; hash: string } });
    expect(next).toMatchObject({ ok: true, newChain: false });
    expect(old.records + next.records).toBe(6);
    expect((await verifyAuditFile(path)).problem?.reason).toMatch(/verify it after the file before it/);
    // A gap between the files is found.
    const wrong = await verifyAuditFile(path, { after: { seq: old.end?.seq ?? 0, hash: '0'.repeat(64) } });
    expect(wrong.problem).toMatchObject({ line: 1 });
  });

  it('refuses a path that already holds lines and keeps writing to the old file', async () => {
    const dir = await tmp();
    const path = join(dir, 'audit.log');
    const log = await AuditLog.open({ file: path, logger: captureLogger().logger, fsync: 'never' });
    log.record(rec(1));
    await log.flush();
    await rename(path, `${path}.1`);
    await writeFile(path, 'someone else\n');
    await expect(log.reopen()).rejects.toThrow(/already holds audit lines/);
    log.record(rec(2));
    await log.close();
    expect((await readFile(`${path}.1`, 'utf8')).trim().split('\n')).toHaveLength(2);
    expect(await readFile(path, 'utf8')).toBe('someone else\n');
  });
});
