/**
 * Two hosts, one shared key store: gateways A and B (own dataDir and socket each) keep their key
 * records in one S3 bucket/prefix on LocalStack, wrapped under one AWS KMS KEK (LocalStack KMS).
 *
 *   host A: primary P, archive_command = 'kmsgw enc pg/cluster-1/wal ... --socket <A>'
 *   host B: restore_command = 'kmsgw dec pg/cluster-1/wal --restore ... --socket <B>', for
 *     - R, a point-in-time recovery of P's base backup on a "new VM" (B has never seen the key), and
 *     - S, a streaming standby of P that must first fetch from the archive what P has removed.
 *
 * The WAL archive is a folder both "hosts" see (a shared mount or synced bucket in real life).
 * Both gateways run with `keys.autoCreate: false`: B can only find the key in the store, never
 * make a new one. The key is created once, explicitly, through A.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.js';
import { fileNameFor } from '../../src/keystore/file/index.js';
import { objectNameFor } from '../../src/keystore/names.js';
import { KeyRecordSchema } from '../../src/keystore/types.js';
import type { TestGateway } from '../helpers/gateway.js';
import {
  KMSGW_BIN,
  NODE,
  kmsgwCommand,
  pgPreflight,
  baseBackup,
  run,
  runAsPg,
  shq,
  tail,
  usePostgres,
  waitArchived,
  waitFor,
  type PgCluster,
} from '../helpers/postgres.js';
import { listNames, useS3Bucket } from '../helpers/s3.js';

const ls = inject('localstack');
// LocalStack accepts any credentials; the gateways (in this process) read them through the SDK's default chain.
process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';

const pg = usePostgres();
const { sdk, bucket } = await useS3Bucket(ls.endpoint, ls.region, 'kmsgw-pg-hosts');
const PREFIX = 'kmsgw/';
const KEY = 'pg/cluster-1/wal';
const KEK = `aws-kms://${ls.aliasA}`;

beforeAll(() => pgPreflight(), 60_000);

/** One host's kmsgw.yaml, as docs/postgresql.md "Several hosts" shows it (plus LocalStack's endpoints). */
function hostConfig(): ConfigInput {
  return {
    keystore: { url: `s3://${bucket}/${PREFIX}`, endpoint: ls.endpoint, forcePathStyle: true, region: ls.region, refreshMs: 30_000 },
    keys: { autoCreate: false, defaultKek: KEK, allowedKeks: [KEK] },
    kms: { adapters: { 'aws-kms': { endpoint: ls.endpoint, region: ls.region } } },
    // Relative to the gateway's folder (its base dir): how this test sees what each host's gateway served.
    audit: { file: 'audit.log', fsync: 'always' },
  };
}

interface AuditRecord {
  verb: string;
  keyId?: string;
  outcome: string;
}

async function audit(gw: TestGateway): Promise<AuditRecord[]> {
  const text = await readFile(join(gw.dir, 'audit.log'), 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as AuditRecord);
}

/** How many requests of `verb` on the WAL key `gw` answered OK, once its audit log has them. */
async function served(gw: TestGateway, verb: string): Promise<number> {
  return (await audit(gw)).filter((r) => r.verb === verb && r.keyId === KEY && r.outcome === 'OK').length;
}

async function waitUntil(what: string, cluster: PgCluster, check: () => Promise<boolean>): Promise<void> {
  await waitFor(
    async () => ((await check()) ? true : undefined),
    60_000,
    async () => `${what}:\n${tail(await cluster.log(), 30)}`,
  );
}

const count = async (c: PgCluster, marker: string): Promise<string> => c.sql(`select count(*) from notes where body like '${marker} %'`);

describe('PostgreSQL on two hosts sharing an S3 key store', () => {
  it(
    'a new VM recovers (PITR) and a standby follows, decrypting the archive through the other host’s gateway',
    { timeout: 180_000 },
    async () => {
      const t0 = Date.now();
      const [gwA, gwB] = await Promise.all([pg.startGateway(hostConfig()), pg.startGateway(hostConfig())]);
      const sockA = gwA.socketPath as string;
      const sockB = gwB.socketPath as string;
      expect(gwA.store.location).toBe(`s3://${bucket}/${PREFIX}`);
      expect(gwB.store.location).toBe(gwA.store.location);

      // Host A creates the key once (the admin step of the docs).
      const created = await run(NODE, [KMSGW_BIN, 'key', 'create', KEY, '--socket', sockA]);
      expect(created.code, created.stderr).toBe(0);

      const archive = await pg.pgDir();
      const primary = await pg.initCluster({
        // 1 MiB segments: the same hooks with less to encrypt, so the test stays quick.
        initdbArgs: ['--wal-segsize=1'],
        settings: {
          wal_level: 'replica',
          archive_mode: true,
          archive_command: `test ! -f ${shq(archive)}/%f && ${kmsgwCommand(['enc', KEY, '--aad', '%f', '-i', '%p', '-o', `${archive}/%f`, '--socket', sockA])}`,
        },
      });
      await primary.start();
      await primary.sql('create table notes (id int primary key, body text not null)');

      // One base backup (WAL left to the archive, as in wal-archive.test.ts), copied for R and for S.
      const backups = await pg.pgDir();
      const forR = join(backups, 'pitr');
      await baseBackup(primary, forR, backups);
      const forS = join(backups, 'standby');
      expect((await run('cp', ['-a', forR, forS])).code).toBe(0);
      const startSeg = /START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)/.exec(await readFile(join(forR, 'backup_label'), 'utf8'))?.[1];
      expect(startSeg).toBeDefined();

      // After the backup: batch 1, a named restore point, batch 2; all of it archived through A.
      const tag = randomBytes(6).toString('hex');
      const [batch1, batch2, batch3] = [1, 2, 3].map((n) => `kmsgw-two-hosts-${tag}-b${n}`) as [string, string, string];
      await primary.sql(`insert into notes select g, '${batch1} ' || g from generate_series(1, 300) g`);
      await primary.sql("select pg_create_restore_point('before-batch-2')");
      await primary.sql(`insert into notes select g, '${batch2} ' || g from generate_series(301, 600) g`);
      const lastSeg = await primary.sql('select pg_walfile_name(pg_current_wal_lsn())');
      await primary.sql('select pg_switch_wal()');
      await waitArchived(primary, lastSeg, 60_000);
      // A checkpoint removes (recycles) every archived segment before it: P no longer has the
      // backup's WAL, so a standby made from the backup cannot stream it and must use the archive.
      await primary.sql('checkpoint');
      expect(await readdir(join(primary.dataDir, 'pg_wal'))).not.toContain(startSeg);
      expect(await served(gwA, 'ENC')).toBeGreaterThan(0);
      const tArchived = Date.now();

      // B has never seen the key: nothing in memory, nothing in its snapshot.
      const snapshotB = join(gwB.dir, 'data', 'snapshot', fileNameFor(KEY));
      expect(gwB.store.peek(KEY)).toBeUndefined();
      expect(existsSync(snapshotB)).toBe(false);

      // 1. PITR on a new VM: R replays the archive through B, up to the restore point.
      const restoreB = kmsgwCommand(['dec', KEY, '--restore', '--aad', '%f', '-i', `${archive}/%f`, '-o', '%p', '--socket', sockB]);
      const pitr = await pg.adoptCluster(forR, {
        // A restored copy must not archive into the primary's archive (its new timeline would mislead P's standbys).
        archive_mode: false,
        restore_command: restoreB,
        recovery_target_name: 'before-batch-2',
        recovery_target_action: 'promote',
      });
      await runAsPg('touch', [join(forR, 'recovery.signal')]);
      await pitr.start();
      await waitUntil('R still in recovery', pitr, async () => (await pitr.sql('select pg_is_in_recovery()')) === 'f');
      expect(await count(pitr, batch1)).toBe('300'); // written after the base backup: only the archive had it
      expect(await count(pitr, batch2)).toBe('0'); // after the recovery target
      const logR = await pitr.log();
      expect(logR).toMatch(new RegExp(`restored log file "${startSeg}" from archive`));
      expect(logR).toMatch(/recovery stopping at restore point "before-batch-2"/);
      await pitr.stop();
      const decByR = await served(gwB, 'DEC');
      expect(decByR).toBeGreaterThan(0);
      expect(existsSync(snapshotB)).toBe(true); // B keeps the record it looked up
      const tPitr = Date.now();

      // 2. Standby on host B: it restores what P removed from the archive through B, then streams from P.
      const standby = await pg.adoptCluster(forS, {
        restore_command: restoreB,
        primary_conninfo: `host=127.0.0.1 port=${primary.port} user=postgres application_name=standby_b`,
        // Used only if S is promoted (a standby with archive_mode = on archives nothing).
        archive_command: `test ! -f ${shq(archive)}/%f && ${kmsgwCommand(['enc', KEY, '--aad', '%f', '-i', '%p', '-o', `${archive}/%f`, '--socket', sockB])}`,
      });
      await runAsPg('touch', [join(forS, 'standby.signal')]);
      await standby.start();
      await waitUntil(
        'S not streaming from P',
        standby,
        async () => (await primary.sql("select state from pg_stat_replication where application_name = 'standby_b'")) === 'streaming',
      );
      expect(await standby.sql('select pg_is_in_recovery()')).toBe('t');
      expect(await count(standby, batch2)).toBe('300');
      await primary.sql(`insert into notes select g, '${batch3} ' || g from generate_series(601, 900) g`);
      await waitUntil('batch 3 not on S', standby, async () => (await count(standby, batch3)) === '300');
      expect(await standby.log()).toMatch(new RegExp(`restored log file "${startSeg}" from archive`));
      expect(await served(gwB, 'DEC')).toBeGreaterThan(decByR);
      const tStandby = Date.now();

      // B only read: it created nothing, wrapped nothing, encrypted nothing; it unwrapped the DEK through the KMS itself.
      expect(await served(gwB, 'ENC')).toBe(0);
      expect((await audit(gwB)).filter((r) => r.verb === 'CREATE')).toEqual([]);
      expect(gwB.adapterCalls).toContainEqual({ op: 'unwrap', kek: KEK });
      expect(gwB.adapterCalls.filter((c) => c.op !== 'unwrap')).toEqual([]);

      // 3. The record lives in the bucket, once; each gateway keeps only a snapshot copy, no key folder.
      const objectName = objectNameFor(PREFIX, KEY);
      expect(await listNames(sdk, bucket, PREFIX)).toEqual([objectName]);
      const object = await sdk.send(new GetObjectCommand({ Bucket: bucket, Key: objectName }));
      const record = KeyRecordSchema.parse(JSON.parse(await (object.Body as { transformToString(): Promise<string> }).transformToString()));
      expect(record.id).toBe(KEY);
      expect(record.versions.map((v) => [v.version, v.wraps.map((w) => w.kek).join(','), v.state])).toEqual([[1, KEK, 'enabled']]);
      for (const gw of [gwA, gwB]) {
        expect(existsSync(join(gw.dir, 'data', 'keys')), gw.dir).toBe(false);
        expect(await readdir(join(gw.dir, 'data', 'snapshot'))).toContain(fileNameFor(KEY));
      }
      const tEnd = Date.now();
      console.log(
        `two-hosts: setup+backup+archive ${tArchived - t0} ms, PITR through B ${tPitr - tArchived} ms, ` +
          `standby through B ${tStandby - tPitr} ms, checks ${tEnd - tStandby} ms, total ${tEnd - t0} ms`,
      );
    },
  );
});
