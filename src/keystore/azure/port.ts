// The narrow port between the azblob backend and @azure/storage-blob: the three calls it makes, each cancellable.
import type { Readable } from 'node:stream';
import type { ContainerClient } from '@azure/storage-blob';

/** One listed blob: its full name and ETag. */
export interface BlobEntry {
  readonly name: string;
  readonly etag: string | undefined;
}

/** The condition of an upload: create-only, or replace exactly this ETag. */
export type UploadCondition = { readonly ifNoneMatch: '*' } | { readonly ifMatch: string };

/**
 * What the backend needs from Blob Storage: three calls on one container, each cancellable. The SDK's
 * ContainerClient by default (sdkPort); errors are the SDK's, classified by the backend.
 */
export interface AzureBlobPort {
  /** The blob's bytes and ETag, in one request (so the two belong together). */
  download(name: string, signal: AbortSignal): Promise<{ body: Buffer; etag: string | undefined }>;
  /** Uploads a block blob if `condition` holds; its new ETag. */
  upload(name: string, body: Buffer, condition: UploadCondition, signal: AbortSignal): Promise<string | undefined>;
  /** The blobs whose names start with `prefix`, a page at a time. */
  listPages(prefix: string, signal: AbortSignal): AsyncIterable<readonly BlobEntry[]>;
}

/** The SDK behind the port. `pageSize` is for tests of paging; the service's default is 5000. */
export function sdkPort(container: ContainerClient, pageSize?: number): AzureBlobPort {
  return {
    async download(name, signal) {
      // One retry of a broken body stream (the SDK resumes with If-Match on the same ETag).
      const res = await container.getBlobClient(name).download(0, undefined, { abortSignal: signal, maxRetryRequests: 1 });
      return { body: await readAll(res.readableStreamBody, signal), etag: res.etag };
    },
    async upload(name, body, condition, signal) {
      const res = await container.getBlockBlobClient(name).upload(body, body.length, {
        abortSignal: signal,
        conditions: condition,
        blobHTTPHeaders: { blobContentType: 'application/json' },
      });
      return res.etag;
    },
    async *listPages(prefix, signal) {
      const pages = container
        .listBlobsFlat({ prefix, abortSignal: signal })
        .byPage(pageSize === undefined ? {} : { maxPageSize: pageSize });
      for await (const page of pages) {
        yield page.segment.blobItems.map((b) => ({ name: b.name, etag: b.properties.etag }));
      }
    },
  };
}

async function readAll(body: NodeJS.ReadableStream | undefined, signal: AbortSignal): Promise<Buffer> {
  if (body === undefined) return Buffer.alloc(0);
  // In Node the body is a Readable. The SDK's signal covers the request; a body that stalls after the
  // headers is cut off here.
  const stream = body as Readable;
  const onAbort = (): void => {
    stream.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
  };
  signal.addEventListener('abort', onAbort, { once: true });
  if (signal.aborted) onAbort();
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer));
    return Buffer.concat(chunks);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}
