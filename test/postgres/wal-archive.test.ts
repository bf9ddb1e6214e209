/**
 * PostgreSQL 15's WAL archive, encrypted by kmsgw:
 *   archive_command = 'node bin/kmsgw.js enc pg/wal --aad %f -i %p -o <archive>/%f --socket ...'
 *   restore_command = 'node bin/kmsgw.js dec pg/wal --aad %f -i <archive>/%f -o %p --socket ...'
 * The segment's file name is the AAD, so a segment renamed in the archive does not decrypt.
 * Segments are PostgreSQL's default 16 MiB: `kmsgw enc`/`dec` stream them in chunks.
 *
 * The server runs as the `postgres` OS user (see test/helpers/postgres.ts), so the gateway's
 * socket is opened up to mode 0666 in a traversable folder: a test-only setting.
 */
import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { baseBackup, kmsgwCommand, pgPreflight, run, runAsPg, tail, usePostgres, waitArchived, waitFor } from '../helpers/postgres.js';

const pg = usePostgres();

/** PostgreSQL's default WAL segment size, in MiB. */
const WAL_SEGSIZE_MB = 16;

beforeAll(() => pgPreflight(), 60_000);

async function contains(file: string, needle: Buffer): Promise<boolean> {
  return (await readFile(file)).includes(needle);
}

describe('PostgreSQL WAL archive encrypted with kmsgw', () => {
  it('archives only ciphertext, recovers a base backup from it, and refuses a tampered segment', { timeout: 300_000 }, async () => {
    const t0 = Date.now();
    const gw = await pg.startGateway();
    const sock = gw.socketPath as string;
    const archive = await pg.pgDir();

    const primary = await pg.initCluster({
      initdbArgs: [`--wal-segsize=${WAL_SEGSIZE_MB}`],
      settings: {
        wal_level: 'replica',
        archive_mode: true,
        archive_command: kmsgwCommand(['enc', 'pg/wal', '--aad', '%f', '-i', '%p', '-o', `${archive}/%f`, '--socket', sock]),
      },
    });
    await primary.start();
    await primary.sql('create table notes (id int primary key, body text not null)');

    // The base backup comes first, so the marked rows exist only in WAL written after it.
    const backups = await pg.pgDir();
    const base = join(backups, 'base');
    await baseBackup(primary, base, backups);
    const fresh = join(backups, 'fresh');
    expect((await run('cp', ['-a', base, fresh])).code).toBe(0);
    const tBackup = Date.now();

    const marker = `kmsgw-wal-marker-${randomBytes(8).toString('hex')}`;
    await primary.sql(`insert into notes select g, '${marker} ' || g from generate_series(1, 500) g`);
    const last = await primary.sql('select pg_walfile_name(pg_current_wal_lsn())');
    await primary.sql('select pg_switch_wal()');
    await waitArchived(primary, last);
    const tArchived = Date.now();

    // The plaintext segment holds the marker (so this test can fail); no archived file does.
    const needle = Buffer.from(marker);
    expect(await contains(join(primary.dataDir, 'pg_wal', last), needle)).toBe(true);
    const archived = (await readdir(archive)).sort();
    expect(archived).toContain(last);
    for (const f of archived) {
      expect(f).toMatch(/^[0-9A-F]{24}(\.[0-9A-F]{8}\.backup)?$/); // no temp files left behind
      expect(await contains(join(archive, f), needle), f).toBe(false);
    }
    const segSize = WAL_SEGSIZE_MB * 1024 * 1024;
    expect((await readFile(join(archive, last))).length).toBeGreaterThan(segSize);
    await primary.stop();

    // Recovery of the base backup from the archive, to its end.
    const recoverySettings = {
      archive_mode: false,
      // --restore: a missing file exits 1 ("not in the archive"); tampering or an outage exits 255,
      // which PostgreSQL treats as fatal, so recovery stops instead of ending early.
      restore_command: kmsgwCommand(['dec', 'pg/wal', '--restore', '--aad', '%f', '-i', `${archive}/%f`, '-o', '%p', '--socket', sock]),
    };
    const restored = await pg.adoptCluster(base, recoverySettings);
    await runAsPg('touch', [join(base, 'recovery.signal')]);
    await restored.start();
    await waitFor(
      async () => ((await restored.sql('select pg_is_in_recovery()')) === 'f' ? true : undefined),
      120_000,
      async () => `still in recovery:\n${tail(await restored.log(), 30)}`,
    );
    expect(await restored.sql(`select count(*) from notes where body like '${marker} %'`)).toBe('500');
    expect(await restored.log()).toMatch(/restored log file "[0-9A-F]{24}" from archive/);
    await restored.stop();
    const tRestored = Date.now();

    // A fresh recovery of the same backup, with one byte changed in the segment that holds the
    // marked rows. It lies after the backup's consistency point, where a restore_command failing
    // with status 1 would just end recovery early (and lose the rows); kmsgw's --restore status
    // stops the server instead of replaying or skipping it.
    const label = await readFile(join(fresh, 'backup_label'), 'utf8');
    const startSeg = /START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)/.exec(label)?.[1];
    expect(startSeg, label).toBeDefined();
    expect(last).not.toBe(startSeg);
    const victim = join(archive, last);
    const bytes = await readFile(victim);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = (bytes[at] as number) ^ 0x01;
    await writeFile(victim, bytes);

    const tampered = await pg.adoptCluster(fresh, recoverySettings);
    await runAsPg('touch', [join(fresh, 'recovery.signal')]);
    const attempt = await tampered.tryStart();
    const log = await tampered.log();
    expect(attempt.ok, log).toBe(false);
    expect(log).toMatch(/kmsgw: DECRYPT_FAILED .*\(recovery must stop\)/);
    expect(log).toMatch(new RegExp(`restored log file "${startSeg}" from archive`));
    expect(log).not.toMatch(new RegExp(`restored log file "${last}"`));
    expect(log).not.toMatch(/ready to accept/);
    const tEnd = Date.now();
    console.log(
      `wal-archive (${WAL_SEGSIZE_MB} MiB segments, ${archived.length} archived files): setup+base backup ${tBackup - t0} ms, ` +
        `insert+archive ${tArchived - tBackup} ms, recovery ${tRestored - tArchived} ms, tampered start ${tEnd - tRestored} ms, total ${tEnd - t0} ms`,
    );
  });
});
