import { randomUUID } from 'node:crypto';
import { CreateBucketCommand, DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { afterAll } from 'vitest';

/** An S3 client of the LocalStack at `endpoint` (path-style, LocalStack's `test` credentials). */
export function localS3(endpoint: string, region: string): S3Client {
  return new S3Client({ endpoint, forcePathStyle: true, region, credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
}

/** Every object name under `prefix`, sorted. */
export async function listNames(sdk: S3Client, bucket: string, prefix = ''): Promise<string[]> {
  const names: string[] = [];
  let token: string | undefined;
  do {
    const page = await sdk.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) if (o.Key !== undefined) names.push(o.Key);
    token = page.NextContinuationToken;
  } while (token !== undefined);
  return names.sort();
}

/**
 * A new bucket named `<stem>-<random>` in the LocalStack at `endpoint`, emptied and removed
 * after the file's tests (a reused LocalStack lives on). Call at module level or in beforeAll.
 */
export async function useS3Bucket(endpoint: string, region: string, stem: string): Promise<{ sdk: S3Client; bucket: string }> {
  const sdk = localS3(endpoint, region);
  const bucket = `${stem}-${randomUUID().slice(0, 8)}`;
  await sdk.send(new CreateBucketCommand({ Bucket: bucket }));
  afterAll(async () => {
    for (;;) {
      const names = await listNames(sdk, bucket);
      if (names.length === 0) break;
      await sdk.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: names.map((Key) => ({ Key })), Quiet: true } }));
    }
    await sdk.send(new DeleteBucketCommand({ Bucket: bucket }));
    sdk.destroy();
  });
  return { sdk, bucket };
}
