import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { IdempotencyStrategy, Storage } from '@google-cloud/storage';
import { StoreError, type ListedObject, type StoreBackend, type StoredObject, type WriteResult } from '../backend.js';
import { escapeId, idFromObjectName, objectNameFor } from '../names.js';
import type { BackendModule, BackendSettings, OpenOptions } from '../open.js';
import type { StoreLocation } from '../url.js';
import { classify, isAbsentObject, isConflict, isTransient } from './classify.js';

export { classify } from './classify.js';

/** An object as downloaded: its bytes and the generation they are. */
export interface GcsObject {
  readonly body: Buffer;
  readonly generation: string;
}

/** One page of a listing. */
export interface GcsPage {
  readonly objects: readonly { readonly name: string; readonly generation: string }[];
  readonly nextPageToken?: string;
}

/**
 * What the backend needs from Cloud Storage: three calls on one bucket, each given the caller's signal. Errors
 * pass through as the SDK throws them; the backend classifies them. The SDK client by default (sdkPort).
 */
export interface GcsPort {
  /** The object's bytes and generation, from one request (the generation comes with the bytes). */
  download(name: string, signal: AbortSignal): Promise<GcsObject>;
  /** Uploads `body` only if the object's generation is `ifGenerationMatch` (`'0'`: only if absent); the new generation. */
  save(name: string, body: Buffer, ifGenerationMatch: string, signal: AbortSignal): Promise<string>;
  /** One page of the objects whose names start with `prefix`. */
  list(prefix: string, pageToken: string | undefined, signal: AbortSignal): Promise<GcsPage>;
}

/** Cloud Storage's largest page; fake-gcs-server pages only when asked, so it is always asked. */
export const MAX_PAGE_SIZE = 1000;
/** Per-request HTTP timeout: how long a request the caller gave up on may keep its socket (see sdkPort). */
const REQUEST_TIMEOUT_MS = 30_000;

/**
 * Settles with `start()`, or rejects with the signal's reason as soon as it aborts. The SDK (8.x, teeny-request
 * underneath) takes no AbortSignal, so an abandoned request runs on in the background until it ends or hits the
 * per-request timeout; its result is dropped. For a write that is harmless: it is conditional, and the caller,
 * having been told it failed, re-reads.
 */
function raced<T>(signal: AbortSignal, start: () => Promise<T>): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    start()
      .then(resolve, reject)
      .finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function headerOf(response: unknown, name: string): string | undefined {
  const headers = (response as { headers?: Record<string, unknown> } | undefined)?.headers;
  const value = headers?.[name];
  return typeof value === 'string' ? value : undefined;
}

/** One retry after a short pause, for reads and listings only; the caller's deadline bounds both attempts. */
async function twice<T>(signal: AbortSignal, attempt: () => Promise<T>): Promise<T> {
  try {
    return await raced(signal, attempt);
  } catch (err) {
    if (signal.aborted || !isTransient(err)) throw err;
    await raced(signal, () => sleep(100 + Math.random() * 200));
    return raced(signal, attempt);
  }
}

/**
 * The SDK behind the port, with its own retries off:
 * - It would retry a conditional upload ("conditionally idempotent"): had the first attempt landed and only its
 *   answer been lost, the retry would fail its precondition, and a won write would come back as a lost race.
 *   Writes are never retried; the caller re-reads.
 * - Its retry of a download (8.4.0: retry-request 9 over teeny-request 11) leaves an unhandled rejection
 *   (ERR_STREAM_UNABLE_TO_PIPE) behind, which would stop the process. Reads and listings get one retry of ours
 *   instead (`twice`).
 * Uploads are simple (one request, no resumable session) and carry their MD5, which Cloud Storage checks; the SDK's
 * own after-the-fact check is off, because on a mismatch it deletes the object without any precondition, which
 * could delete another host's newer record.
 */
export function sdkPort(bucketName: string, endpoint: string | undefined): GcsPort {
  const bucket = new Storage({
    // An emulator endpoint gets no credentials at all (no ADC lookup, no metadata-server probe); otherwise ADC.
    ...(endpoint ? { apiEndpoint: endpoint, useAuthWithCustomEndpoint: false } : {}),
    timeout: REQUEST_TIMEOUT_MS,
    retryOptions: { autoRetry: false, idempotencyStrategy: IdempotencyStrategy.RetryNever },
  }).bucket(bucketName);

  return {
    download: (name, signal) =>
      twice(
        signal,
        () =>
          new Promise<GcsObject>((resolve, reject) => {
            let generation: string | undefined;
            const chunks: Buffer[] = [];
            // Not destroyed on abort: the SDK answers a destroyed download by destroying its shared HTTP agent,
            // which would break every other request in flight.
            bucket
              .file(name)
              .createReadStream()
              .on('response', (response: unknown) => (generation = headerOf(response, 'x-goog-generation')))
              .on('data', (chunk: Buffer) => chunks.push(chunk))
              .on('error', reject)
              .on('end', () => {
                if (generation === undefined || !/^\d+$/.test(generation)) {
                  reject(new StoreError('Cloud Storage sent an object without its generation'));
                } else {
                  resolve({ body: Buffer.concat(chunks), generation });
                }
              });
          }),
      ),
    save: (name, body, ifGenerationMatch, signal) =>
      raced(signal, async () => {
        const file = bucket.file(name);
        await file.save(body, {
          resumable: false,
          validation: false,
          metadata: { contentType: 'application/json', md5Hash: createHash('md5').update(body).digest('base64') },
          preconditionOpts: { ifGenerationMatch },
        });
        const generation = file.metadata.generation;
        if (generation === undefined || !/^\d+$/.test(String(generation))) {
          throw new StoreError('Cloud Storage did not return the written generation');
        }
        return String(generation);
      }),
    list: (prefix, pageToken, signal) =>
      twice(signal, async () => {
        const [, , response] = await bucket.getFiles({
          prefix,
          autoPaginate: false,
          maxResults: MAX_PAGE_SIZE,
          fields: 'items(name,generation),nextPageToken',
          ...(pageToken === undefined ? {} : { pageToken }),
        });
        return parsePage(response);
      }),
  };
}

/** A JSON API objects.list answer, checked field by field. */
function parsePage(response: unknown): GcsPage {
  const { items, nextPageToken } = (response ?? {}) as { items?: unknown; nextPageToken?: unknown };
  const objects: { name: string; generation: string }[] = [];
  for (const item of Array.isArray(items) ? (items as unknown[]) : []) {
    const { name, generation } = (item ?? {}) as { name?: unknown; generation?: unknown };
    if (typeof name !== 'string' || (typeof generation !== 'string' && typeof generation !== 'number')) {
      throw new StoreError('Cloud Storage sent a listing without names or generations');
    }
    objects.push({ name, generation: String(generation) });
  }
  return typeof nextPageToken === 'string' && nextPageToken !== '' ? { objects, nextPageToken } : { objects };
}

const CONFLICT: WriteResult = { ok: false, conflict: true };
/** A generation: a positive int64 in decimal. */
const GENERATION_RE = /^[1-9]\d{0,18}$/;

/**
 * Key records as objects in one Cloud Storage bucket, under a prefix (`gs://bucket/prefix/`). The revision is the
 * object's generation: a create is an upload with `ifGenerationMatch=0`, a compare-and-swap one with
 * `ifGenerationMatch=<generation>`, so Cloud Storage itself decides every race.
 */
export class GcsBackend {
  private closed = false;

  constructor(
    readonly bucket: string,
    readonly prefix: string,
    private readonly port: GcsPort,
    private readonly options: OpenOptions = {},
  ) {}

  get location(): string {
    return `gs://${this.bucket}/${this.prefix}`;
  }

  async read(id: string, signal: AbortSignal): Promise<StoredObject | undefined> {
    this.assertOpen();
    try {
      const { body, generation } = await this.port.download(objectNameFor(this.prefix, id), signal);
      return { body, revision: generation };
    } catch (err) {
      if (isAbsentObject(err)) return undefined;
      throw classify(err, 'read', this.bucket);
    }
  }

  async write(id: string, body: Buffer, expected: string | null, signal: AbortSignal): Promise<WriteResult> {
    if (this.options.readOnly) throw new StoreError('key store was opened read-only');
    this.assertOpen();
    // No object ever has a revision that is not a generation: such an expectation has already lost.
    if (expected !== null && !GENERATION_RE.test(expected)) return CONFLICT;
    try {
      const generation = await this.port.save(objectNameFor(this.prefix, id), body, expected ?? '0', signal);
      return { ok: true, revision: generation };
    } catch (err) {
      if (isConflict(err)) return CONFLICT;
      throw classify(err, 'write', this.bucket);
    }
  }

  async *list(prefix: string, signal: AbortSignal): AsyncIterable<ListedObject> {
    this.assertOpen();
    // Escaping is per character, so names of ids starting with `prefix` start with the escaped prefix.
    const namePrefix = this.prefix + escapeId(prefix);
    let pageToken: string | undefined;
    do {
      let page: GcsPage;
      try {
        page = await this.port.list(namePrefix, pageToken, signal);
      } catch (err) {
        throw classify(err, 'list', this.bucket);
      }
      for (const { name, generation } of page.objects) {
        const id = idFromObjectName(this.prefix, name);
        if (id !== undefined && id.startsWith(prefix)) yield { id, revision: generation };
      }
      pageToken = page.nextPageToken;
    } while (pageToken !== undefined);
  }

  /** Nothing to release: the SDK keeps no connections of its own beyond a shared keep-alive pool. */
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError('key store is closed');
  }
}

/**
 * Opens `gs://bucket/prefix/`. `settings.endpoint` is an emulator's address (fake-gcs-server), reached without
 * credentials; otherwise Application Default Credentials. No request is made until the first call.
 */
export function open(location: Extract<StoreLocation, { kind: 'gs' }>, settings: BackendSettings, options: OpenOptions = {}) {
  return Promise.resolve(new GcsBackend(location.bucket, location.prefix, sdkPort(location.bucket, settings.endpoint), options));
}

// Compile-time conformance: the class is a StoreBackend, the module a BackendModule.
void (null as unknown as GcsBackend satisfies StoreBackend);
void ({ open } satisfies BackendModule<'gs'>);
