/**
 * Key stores with N real key records for the start-up benchmark, made directly rather than
 * through a gateway (one CREATE at a time would take hours for 100,000 keys): each record is
 * a real DEK wrapped by the local KEK adapter under the bench's own KEK, with its commitment
 * tag, serialized by the KeyStore's own `serialize` (so it passes the schema). A gateway can
 * therefore GET any of them.
 */
import { Agent } from 'node:http';
import { createHash, randomFillSync } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateBucketCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { ensureLocalKek, createWrapper } from '../adapters/local/index.js';
import { AdapterSettingsSchema } from '../adapters/settings.js';
import { commitTag } from '../src/crypto/commit.js';
import { serialize } from '../src/keystore/key-store.js';
import { fileNameFor } from '../src/keystore/file/index.js';
import { objectNameFor } from '../src/keystore/names.js';
import type { KeyWrapper } from '../adapters/types.js';

/** The id of record `i` of a store of `n`: `bench/startup/k000042`. */
export function benchKeyId(i: number, n: number): string {
  return `bench/startup/k${String(i).padStart(String(Math.max(0, n - 1)).length, '0')}`;
}

/** The bench's KEK: a local KEK file kept in the cache folder, so an S3 store uploaded once stays readable. */
export interface BenchKek {
  /** `local:///abs/path/bench-kek` */
  readonly uri: string;
  /** The folder `kms.adapters.local.dir` must name. */
  readonly dir: string;
  /** First 12 hex digits of SHA-256 of the KEK: names the S3 prefix, so a new KEK never reuses old records. */
  readonly fingerprint: string;
  readonly wrapper: KeyWrapper;
}

export async function benchKek(cache: string): Promise<BenchKek> {
  const dir = join(cache, 'bench', 'kek');
  const path = join(dir, 'bench-kek');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await ensureLocalKek(path);
  const bytes = await readFile(path);
  const fingerprint = createHash('sha256').update(bytes).digest('hex').slice(0, 12);
  bytes.fill(0);
  const uri = `local://${path}`;
  const settings = AdapterSettingsSchema.parse({ local: { enabled: true, dir } });
  return { uri, dir, fingerprint, wrapper: createWrapper(uri, { dataDir: dir, settings }) };
}

/** Record `i` of `n` as stored: a fresh DEK wrapped under the bench KEK. */
export async function recordBody(kek: BenchKek, i: number, n: number, created: string): Promise<{ id: string; body: Buffer }> {
  const id = benchKeyId(i, n);
  const dek = randomFillSync(Buffer.alloc(32));
  try {
    const { blob } = await kek.wrapper.wrap(dek, { keyId: id, version: 1, signal: new AbortController().signal });
    const record = {
      format: 2 as const,
      id,
      created,
      versions: [
        {
          version: 1,
          wraps: [{ kek: kek.uri, wrapped: blob.toString('base64') }],
          commit: commitTag(dek, id, 1).toString('base64'),
          created,
          state: 'enabled' as const,
          // What KeyService stores with a new version: its first block of the encryption budget.
          encryptions: 65_536,
        },
      ],
    };
    return { id, body: serialize(id, record) };
  } finally {
    dek.fill(0);
  }
}

/** Runs `fn(i)` for i in [0, n) with at most `concurrency` at a time. */
async function forEachBounded(n: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, n) }, async () => {
      for (let i = next++; i < n; i = next++) await fn(i);
    }),
  );
}

/** Writes `n` records as a file store (`fileNameFor` names) into `dir`; resolves with the bytes written. */
export async function writeFileStore(kek: BenchKek, dir: string, n: number): Promise<{ bytes: number }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const created = new Date().toISOString();
  let bytes = 0;
  await forEachBounded(n, 64, async (i) => {
    const { id, body } = await recordBody(kek, i, n, created);
    bytes += body.length;
    await writeFile(join(dir, fileNameFor(id)), body, { mode: 0o600 });
  });
  return { bytes };
}

export const BENCH_BUCKET = 'kmsgw-bench';

/** Where the S3 stores live in the bench bucket. The empty one is a prefix nothing is ever written under. */
export function s3Prefixes(kek: BenchKek, n: number): { full: string; empty: string; marker: string } {
  const base = `startup-${n}-${kek.fingerprint}/`;
  return { full: `${base}keys/`, empty: 'startup-empty/keys/', marker: `${base}complete.json` };
}

export function benchS3Client(endpoint: string): S3Client {
  return new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    maxAttempts: 5,
    requestHandler: { httpAgent: new Agent({ keepAlive: true, maxSockets: 64 }) },
  });
}

export interface S3StoreSetup {
  /** True when the bucket already held this store (an earlier run's upload on this LocalStack). */
  readonly reused: boolean;
  /** How long the upload of N objects took, this run or the run that made it. */
  readonly uploadMs: number;
  readonly bytes: number;
}

/**
 * Makes sure `s3://kmsgw-bench/<full prefix>` holds the `n` records: reused when the marker an
 * earlier complete upload left is there (LocalStack keeps S3 in memory, so only while that
 * LocalStack runs) and a listing of the prefix counts `n` objects; else uploaded, 64 at a time.
 */
export async function ensureS3Store(kek: BenchKek, endpoint: string, n: number): Promise<S3StoreSetup> {
  const s3 = benchS3Client(endpoint);
  const { full, empty, marker } = s3Prefixes(kek, n);
  try {
    try {
      await s3.send(new CreateBucketCommand({ Bucket: BENCH_BUCKET }));
    } catch (err) {
      const name = (err as { name?: string }).name;
      if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw err;
    }
    const emptyListing = await s3.send(new ListObjectsV2Command({ Bucket: BENCH_BUCKET, Prefix: empty, MaxKeys: 1 }));
    if ((emptyListing.KeyCount ?? 0) > 0) throw new Error(`s3://${BENCH_BUCKET}/${empty} is not empty`);
    const previous = await s3.send(new HeadObjectCommand({ Bucket: BENCH_BUCKET, Key: marker })).then(
      (out) => out.Metadata,
      () => undefined,
    );
    if (previous !== undefined && (await countObjects(s3, full)) === n) {
      return { reused: true, uploadMs: Number(previous['upload-ms']), bytes: Number(previous.bytes) };
    }
    const created = new Date().toISOString();
    let bytes = 0;
    const t0 = performance.now();
    await forEachBounded(n, 64, async (i) => {
      const { id, body } = await recordBody(kek, i, n, created);
      bytes += body.length;
      await s3.send(
        new PutObjectCommand({ Bucket: BENCH_BUCKET, Key: objectNameFor(full, id), Body: body, ContentType: 'application/json' }),
      );
    });
    const uploadMs = performance.now() - t0;
    await s3.send(
      new PutObjectCommand({
        Bucket: BENCH_BUCKET,
        Key: marker,
        Body: '{}',
        Metadata: { 'upload-ms': uploadMs.toFixed(0), bytes: String(bytes) },
      }),
    );
    return { reused: false, uploadMs, bytes };
  } finally {
    s3.destroy();
  }
}

async function countObjects(s3: S3Client, prefix: string): Promise<number> {
  let count = 0;
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: BENCH_BUCKET, Prefix: prefix, ...(token ? { ContinuationToken: token } : {}) }),
    );
    count += page.KeyCount ?? 0;
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return count;
}
