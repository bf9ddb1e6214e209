import {
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandInput,
  type ListObjectsV2CommandInput,
  type ListObjectsV2CommandOutput,
  type PutObjectCommandInput,
} from '@aws-sdk/client-s3';
import { NETWORK_ERROR_CODES } from '../../net/socket-errors.js';
import { StoreError, type ListedObject, type StoreBackend, type StoredObject, type WriteResult } from '../backend.js';
import { escapeId, idFromObjectName, objectNameFor } from '../names.js';
import type { BackendModule, BackendSettings, OpenOptions } from '../open.js';
import { formatStoreUrl, type StoreLocation } from '../url.js';

type S3Location = Extract<StoreLocation, { kind: 's3' }>;

/** What the backend needs from S3: three calls, each cancellable. The SDK client by default. */
export interface S3Port {
  /** The object's bytes (read in full) and ETag. */
  getObject(input: GetObjectCommandInput, signal: AbortSignal): Promise<{ Body?: Uint8Array; ETag?: string }>;
  putObject(input: PutObjectCommandInput, signal: AbortSignal): Promise<{ ETag?: string }>;
  listObjectsV2(
    input: ListObjectsV2CommandInput,
    signal: AbortSignal,
  ): Promise<Pick<ListObjectsV2CommandOutput, 'Contents' | 'IsTruncated' | 'NextContinuationToken'>>;
  /** Releases the client's sockets. */
  close(): void;
}

/** The SDK client behind the port; closing the port destroys the client's sockets. */
export function sdkPort(client: S3Client): S3Port {
  return {
    close: () => client.destroy(),
    getObject: async (input, signal) => {
      const out = await client.send(new GetObjectCommand(input), { abortSignal: signal });
      return { ETag: out.ETag, Body: await out.Body?.transformToByteArray() };
    },
    putObject: (input, signal) => client.send(new PutObjectCommand(input), { abortSignal: signal }),
    listObjectsV2: (input, signal) => client.send(new ListObjectsV2Command(input), { abortSignal: signal }),
  };
}

/** The default when neither the settings nor the SDK's chain (AWS_REGION, the profile) name a region. */
export const FALLBACK_REGION = 'us-east-1';

/**
 * Key records in an S3 bucket (or an S3-compatible store), one object per id under the
 * location's prefix. The revision is the ETag; writes are conditional on the server
 * (`If-None-Match: *` to create, `If-Match: <etag>` to replace), so any number of
 * gateways can share a bucket without a lock.
 */
export class S3Backend {
  readonly location: string;
  private closed = false;

  constructor(
    private readonly where: S3Location,
    private readonly port: S3Port,
    private readonly options: OpenOptions = {},
  ) {
    this.location = formatStoreUrl(where);
  }

  async read(id: string, signal: AbortSignal): Promise<StoredObject | undefined> {
    this.assertOpen();
    try {
      const out = await this.port.getObject({ Bucket: this.where.bucket, Key: objectNameFor(this.where.prefix, id) }, signal);
      const body = out.Body ?? new Uint8Array(0);
      return { body: Buffer.from(body.buffer, body.byteOffset, body.byteLength), revision: this.revisionOf(out.ETag) };
    } catch (err) {
      if (errorName(err) === 'NoSuchKey') return undefined;
      throw this.storeError('read', err, signal);
    }
  }

  async write(id: string, body: Buffer, expected: string | null, signal: AbortSignal): Promise<WriteResult> {
    if (this.options.readOnly) throw new StoreError('key store was opened read-only');
    this.assertOpen();
    try {
      const out = await this.port.putObject(
        {
          Bucket: this.where.bucket,
          Key: objectNameFor(this.where.prefix, id),
          Body: body,
          ContentType: 'application/json',
          ...(expected === null ? { IfNoneMatch: '*' } : { IfMatch: expected }),
        },
        signal,
      );
      return { ok: true, revision: this.revisionOf(out.ETag) };
    } catch (err) {
      if (isLostRace(err, expected)) return { ok: false, conflict: true };
      throw this.storeError('write', err, signal);
    }
  }

  async *list(prefix: string, signal: AbortSignal): AsyncIterable<ListedObject> {
    this.assertOpen();
    let token: string | undefined;
    do {
      let page: Awaited<ReturnType<S3Port['listObjectsV2']>>;
      try {
        page = await this.port.listObjectsV2(
          {
            Bucket: this.where.bucket,
            // Escaping is per character, so the escaped id prefix is a prefix of every matching name.
            Prefix: this.where.prefix + escapeId(prefix),
            // Escaped ids never hold `/`: deeper "folders" (another gateway's prefix) are not paged through.
            Delimiter: '/',
            ...(token === undefined ? {} : { ContinuationToken: token }),
          },
          signal,
        );
      } catch (err) {
        throw this.storeError('list', err, signal);
      }
      for (const item of page.Contents ?? []) {
        const id = item.Key === undefined ? undefined : idFromObjectName(this.where.prefix, item.Key);
        if (id === undefined || !id.startsWith(prefix)) continue; // not a key record
        yield { id, revision: this.revisionOf(item.ETag) };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.port.close();
    }
    return Promise.resolve();
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError('key store is closed');
  }

  /** The ETag as `If-Match` takes it; some S3-compatible stores leave out the quotes in listings. */
  private revisionOf(etag: string | undefined): string {
    if (etag === undefined || etag === '') throw new StoreError(`S3 bucket ${this.where.bucket} returned an object without an ETag`);
    return etag.startsWith('"') || etag.startsWith('W/') ? etag : `"${etag}"`;
  }

  private storeError(op: 'read' | 'write' | 'list', err: unknown, signal: AbortSignal): StoreError {
    if (err instanceof StoreError) return err;
    return new StoreError(describeS3Error(err, this.where.bucket, op, signal), { cause: err });
  }
}

/** Opens an S3 location. No request is made: a missing bucket or denied access shows on the first call. */
export async function open(location: S3Location, settings: BackendSettings, options?: OpenOptions): Promise<StoreBackend> {
  const client = new S3Client({
    region: settings.region ?? (await defaultRegion()),
    // Without one the SDK reads AWS_ENDPOINT_URL_S3 (and AWS_ENDPOINT_URL) itself.
    ...(settings.endpoint === undefined ? {} : { endpoint: settings.endpoint }),
    forcePathStyle: settings.forcePathStyle,
    // A bucket in another region than the configured (or default) one is found rather than refused.
    followRegionRedirects: true,
    // The KeyStore aborts the signal at its deadline; a retry more would only eat into it.
    maxAttempts: 2,
  });
  return new S3Backend(location, sdkPort(client), options);
}

// Compile-time conformance: the class is a StoreBackend, the module a BackendModule.
void (null as unknown as S3Backend satisfies StoreBackend);
void ({ open } satisfies BackendModule<'s3'>);

/** The SDK's region chain (AWS_REGION, the profile's region; no request), else us-east-1. */
async function defaultRegion(): Promise<string> {
  const probe = new S3Client({});
  try {
    return await probe.config.region();
  } catch {
    return FALLBACK_REGION;
  } finally {
    probe.destroy();
  }
}

interface S3LikeError {
  name?: unknown;
  code?: unknown;
  Code?: unknown;
  $fault?: unknown;
  $metadata?: { httpStatusCode?: unknown };
  $retryable?: { throttling?: unknown };
}

const asS3Error = (err: unknown): S3LikeError => (typeof err === 'object' && err !== null ? err : {});

/** The S3 error code (`NoSuchKey`, `AccessDenied`), only when it is a plain word: never free text from the server. */
function errorName(err: unknown): string | undefined {
  const e = asS3Error(err);
  const name = typeof e.Code === 'string' ? e.Code : e.name;
  return typeof name === 'string' && /^[A-Za-z][A-Za-z0-9]{0,63}$/.test(name) ? name : undefined;
}

function statusOf(err: unknown): number | undefined {
  const status = asS3Error(err).$metadata?.httpStatusCode;
  return typeof status === 'number' ? status : undefined;
}

/**
 * A conditional write that lost: 412 from either precondition, 409 from S3's own conflict of two
 * conditional writes in flight, and `NoSuchKey` when replacing (If-Match on a deleted object).
 */
function isLostRace(err: unknown, expected: string | null): boolean {
  const status = statusOf(err);
  const name = errorName(err);
  if (status === 412 || name === 'PreconditionFailed') return true;
  if (status === 409 && (name === 'ConditionalRequestConflict' || name === 'OperationAborted')) return true;
  return expected !== null && name === 'NoSuchKey';
}

const DENIED = new Set([
  'AccessDenied',
  'AllAccessDisabled',
  'AccountProblem',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
]);

/**
 * A short text for an S3 failure that is safe to show a client: the S3 error code or the socket
 * error code, never the server's message or anything from the request (keys, signatures).
 */
export function describeS3Error(err: unknown, bucket: string, op: 'read' | 'write' | 'list', signal?: AbortSignal): string {
  const e = asS3Error(err);
  const name = errorName(err);
  const status = statusOf(err);
  if (signal?.aborted || name === 'AbortError' || name === 'TimeoutError') {
    const reason: unknown = signal?.reason;
    const cancelled = signal?.aborted && !(reason instanceof Error && reason.name === 'TimeoutError');
    return cancelled ? 'S3 request cancelled' : 'S3 request timed out';
  }
  if (name === 'NoSuchBucket') return `S3 bucket ${bucket} does not exist`;
  if (name === 'CredentialsProviderError') return 'S3: no AWS credentials found';
  if ((name !== undefined && DENIED.has(name)) || status === 403) return `S3 access denied (${name ?? status})`;
  if (typeof e.code === 'string' && NETWORK_ERROR_CODES.has(e.code)) return `S3 unreachable (${e.code})`;
  if (name === 'SlowDown' || status === 429 || e.$retryable?.throttling === true) return `S3 request rate exceeded (${name ?? status})`;
  if (e.$fault === 'server' || (status !== undefined && status >= 500)) return `S3 service error (${name ?? status})`;
  return `S3 ${op} failed (${name ?? status ?? 'unexpected error'})`;
}
