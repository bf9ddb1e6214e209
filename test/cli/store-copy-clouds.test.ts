// `kmsgw store copy` between real stores of different kinds: a single-host folder store moved to
// S3 (LocalStack) in one command, then served from there; a backup of the bucket to Cloud Storage
// (fake-gcs-server) and back to a folder, each verified.
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { fakeGcsClient } from '../helpers/fake-gcs.js';
import { okPayload, rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useS3Bucket } from '../helpers/s3.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { gatewayWithKeys, IDS, recordFiles } from './store-fixtures.js';
import { kmsgw, requireBuiltCli } from '../helpers/cli.js';

const ls = inject('localstack');
const gcs = inject('fakeGcs');
const tmp = useTmpDirs();
const running = useRunningGateways();
requireBuiltCli();

const env = { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: ls.region };
process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';
const { bucket } = await useS3Bucket(ls.endpoint, ls.region, 'kmsgw-copy');
await fakeGcsClient(gcs.endpoint).createBucket(bucket);

const s3Flags = (side: 'from' | 'to') => [`--${side}-endpoint`, ls.endpoint, `--${side}-force-path-style`];
const summary = (copied: number, unchanged: number) => `copied ${copied}, unchanged ${unchanged}, refused 0, failed 0\n`;

describe('kmsgw store copy across clouds', () => {
  it('moves a single-host store to S3 in one command; a gateway on the bucket serves the same DEKs; backups to Cloud Storage and a folder verify', async () => {
    const dir = await tmp();
    const { gw, url, keysDir } = await gatewayWithKeys(dir);
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    const deks = new Map<string, string>();
    for (const id of IDS) deks.set(id, okPayload(await c.ask(`GET ${id}`)));
    c.close();

    const s3Url = `s3://${bucket}/prod/`;
    expect(await kmsgw(['store', 'copy', '--from', url, '--to', s3Url, ...s3Flags('to')], { env })).toMatchObject({
      code: 0,
      stdout: summary(IDS.length, 0),
    });
    // Idempotent, and the bucket verifies.
    expect((await kmsgw(['store', 'copy', '--from', url, '--to', s3Url, ...s3Flags('to')], { env })).stdout).toBe(summary(0, IDS.length));
    expect(await kmsgw(['store', 'verify', s3Url, '--endpoint', ls.endpoint, '--force-path-style'], { env })).toMatchObject({
      code: 0,
      stdout: `verified ${IDS.length} records: 0 problems\n`,
    });

    // The gateway, now on S3 with a fresh dataDir, serves every key as before.
    const moved = await startTestGateway(await tmp(), {
      keystore: { url: s3Url, endpoint: ls.endpoint, forcePathStyle: true, region: ls.region },
      keys: { defaultKek: 'fake://store-test', autoCreate: false },
    });
    running.push(moved);
    const m = await rawConnect(moved.socketPath as string);
    for (const [id, dek] of deks) expect(await m.ask(`GET ${id}`)).toBe(`OK ${dek}`);
    expect(JSON.parse(okPayload(await m.ask('INFO pg/cluster-1/tde'))).store).toBe(s3Url);
    m.close();

    // Backup to another cloud, and back to a folder: every copy verifies and matches the original bytes.
    const gsUrl = `gs://${bucket}/backup/`;
    expect(
      await kmsgw(['store', 'copy', '--from', s3Url, ...s3Flags('from'), '--to', gsUrl, '--to-endpoint', gcs.endpoint], {
        env: { ...env, METADATA_SERVER_DETECTION: 'none' },
      }),
    ).toMatchObject({ code: 0, stdout: summary(IDS.length, 0) });
    const restored = join(dir, 'restored');
    expect(
      await kmsgw(['store', 'copy', '--from', gsUrl, '--from-endpoint', gcs.endpoint, '--to', `file://${restored}`], {
        env: { ...env, METADATA_SERVER_DETECTION: 'none' },
      }),
    ).toMatchObject({ code: 0, stdout: summary(IDS.length, 0) });
    expect(await recordFiles(restored)).toEqual(await recordFiles(keysDir));
  }, 60_000);
});
