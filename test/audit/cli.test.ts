import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kmsgw, requireBuiltCli } from '../helpers/cli.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { fileLines, writeLines, writeRecords } from './util.js';

const tmp = useTmpDirs();
requireBuiltCli();

describe('kmsgw audit verify', () => {
  it('exits 0 with "N records, chain intact" on an intact file', async () => {
    const file = join(await tmp(), 'audit.log');
    await writeRecords(file, 5);
    const run = await kmsgw(['audit', 'verify', file]);
    expect(run).toMatchObject({ code: 0, stdout: '5 records, chain intact\n', stderr: '' });
  });

  it('exits 1 naming the first line that was altered', async () => {
    const file = join(await tmp(), 'audit.log');
    await writeRecords(file, 5);
    const lines = await fileLines(file);
    lines[1] = JSON.stringify({ ...JSON.parse(lines[1] as string), outcome: 'OK', verb: 'PING' });
    await writeLines(file, lines);
    const run = await kmsgw(['audit', 'verify', file]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(new RegExp(`^kmsgw: ${file}: line 2: altered`));
  });

  it('exits 1 on a missing file, 2 on a missing argument', async () => {
    const dir = await tmp();
    const missing = await kmsgw(['audit', 'verify', join(dir, 'nope.log')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('nope.log');
    expect((await kmsgw(['audit', 'verify'])).code).toBe(2);
  });
});
