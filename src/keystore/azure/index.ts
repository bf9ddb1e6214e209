import type { TokenCredential } from '@azure/core-auth';
import { BlobServiceClient, StorageSharedKeyCredential, type StoragePipelineOptions } from '@azure/storage-blob';
import { StoreError, type ListedObject, type StoreBackend, type StoredObject, type WriteResult } from '../backend.js';
import { escapeId, idFromObjectName, objectNameFor } from '../names.js';
import type { BackendModule, BackendSettings, OpenOptions } from '../open.js';
import { formatStoreUrl, type StoreLocation } from '../url.js';
import { conditionFailed, describeAzureError, errorCode } from './errors.js';
import { sdkPort, type AzureBlobPort, type BlobEntry, type UploadCondition } from './port.js';

export { describeAzureError } from './errors.js';
export { sdkPort, type AzureBlobPort, type BlobEntry, type UploadCondition } from './port.js';

type AzureLocation = Extract<StoreLocation, { kind: 'azblob' }>;

/**
 * Key records in an Azure Blob Storage container: `azblob://<account>/<container>/<prefix>`, one block blob
 * per key id (names.ts). The revision is the blob's ETag; a create is an upload with `If-None-Match: *`,
 * a compare-and-swap one with `If-Match: <ETag>`, so the service decides every race. A failed condition
 * (412 ConditionNotMet, 409 BlobAlreadyExists) is a conflict; every other failure a StoreError.
 * An upload is durable when the service answers it.
 */
export class AzureBlobBackend {
  private closed = false;

  constructor(
    private readonly target: AzureLocation,
    private readonly port: AzureBlobPort,
    /** The blob endpoint used (`https://<account>.blob.core.windows.net` or keystore.endpoint), for diagnostics. */
    readonly endpoint: string,
    private readonly readOnly = false,
  ) {}

  get location(): string {
    return formatStoreUrl(this.target);
  }

  async read(id: string, signal: AbortSignal): Promise<StoredObject | undefined> {
    this.assertOpen();
    try {
      const got = await this.port.download(objectNameFor(this.target.prefix, id), signal);
      return { body: got.body, revision: revisionOf(got.etag) };
    } catch (err) {
      if (errorCode(err) === 'BlobNotFound') return undefined;
      throw this.classify(err, 'read');
    }
  }

  async write(id: string, body: Buffer, expected: string | null, signal: AbortSignal): Promise<WriteResult> {
    if (this.readOnly) throw new StoreError('key store was opened read-only');
    this.assertOpen();
    const condition: UploadCondition = expected === null ? { ifNoneMatch: '*' } : { ifMatch: expected };
    try {
      const etag = await this.port.upload(objectNameFor(this.target.prefix, id), body, condition, signal);
      return { ok: true, revision: revisionOf(etag) };
    } catch (err) {
      if (conditionFailed(err, expected)) return { ok: false, conflict: true };
      throw this.classify(err, 'write');
    }
  }

  async *list(prefix: string, signal: AbortSignal): AsyncIterable<ListedObject> {
    this.assertOpen();
    // Escaping is per character, so listing by the escaped id prefix lists exactly the ids with that prefix.
    const pages = this.port.listPages(this.target.prefix + escapeId(prefix), signal)[Symbol.asyncIterator]();
    try {
      for (;;) {
        let page: IteratorResult<readonly BlobEntry[]>;
        try {
          page = await pages.next();
        } catch (err) {
          throw this.classify(err, 'list');
        }
        if (page.done) return;
        for (const blob of page.value) {
          const id = idFromObjectName(this.target.prefix, blob.name);
          if (id !== undefined && id.startsWith(prefix)) yield { id, revision: revisionOf(blob.etag) };
        }
      }
    } finally {
      // A caller that stops early ends the SDK's paging too.
      await pages.return?.().catch(() => undefined);
    }
  }

  close(): Promise<void> {
    // The SDK's HTTP client (and its keep-alive sockets) is shared by every client in the process; there is
    // nothing of ours to release.
    this.closed = true;
    return Promise.resolve();
  }

  private assertOpen(): void {
    if (this.closed) throw new StoreError('key store is closed');
  }

  private classify(err: unknown, op: 'read' | 'write' | 'list'): StoreError {
    if (err instanceof StoreError) return err;
    return new StoreError(describeAzureError(err, op, this.target), { cause: err });
  }
}

/** ETags as the service sends them in headers (`"0x8D…"`); List Blobs gives them without quotes. */
function revisionOf(etag: string | undefined): string {
  if (etag === undefined || etag === '') throw new StoreError('Azure Blob Storage returned a blob without an ETag');
  return etag.startsWith('"') ? etag : `"${etag}"`;
}

/** The environment variables open() reads; process.env by default. */
export interface AzureBlobEnv {
  readonly AZURE_STORAGE_KEY?: string | undefined;
  readonly AZURE_STORAGE_CONNECTION_STRING?: string | undefined;
}

/** What can be injected in place of production defaults (tests, embedding). */
export interface AzureBlobDeps {
  /** Default: process.env. */
  readonly env?: AzureBlobEnv;
  /** Default: a new `DefaultAzureCredential` from @azure/identity, loaded only when needed. */
  readonly defaultCredential?: () => Promise<TokenCredential>;
  /** List page size (tests of paging). Default: the service's (5000). */
  readonly pageSize?: number;
}

/**
 * Few, quick retries: the KeyStore's signal is the deadline, and the SDK's default (4 tries, 4 s apart and
 * growing) would outlast it. A create retried after a lost response can come back as a conflict with itself;
 * the KeyStore re-reads on every conflict, so that is seen.
 */
const PIPELINE_OPTIONS: StoragePipelineOptions = {
  retryOptions: { maxTries: 2, retryDelayInMs: 100, maxRetryDelayInMs: 1000 },
  userAgentOptions: { userAgentPrefix: 'kmsgw' },
};

/**
 * Opens `azblob://<account>/<container>/<prefix>`. Makes no request: a missing container or a wrong
 * credential shows on the first call, as a StoreError that names it.
 *
 * Endpoint: `keystore.endpoint` when set (an emulator such as Azurite, with the account in the path:
 * `http://127.0.0.1:10000/devstoreaccount1`), else `https://<account>.blob.core.windows.net`.
 *
 * Credentials, the first that is set:
 * 1. env `AZURE_STORAGE_KEY`: the account key (Shared Key) of the URL's account;
 * 2. env `AZURE_STORAGE_CONNECTION_STRING`: its account key or SAS, and its blob endpoint. Its account must be
 *    the URL's; `keystore.endpoint`, if also set, must be the same endpoint;
 * 3. otherwise Microsoft Entra ID through `DefaultAzureCredential` (@azure/identity: environment, workload
 *    identity, managed identity, Azure CLI, ...), which needs an https endpoint and the role "Storage Blob Data
 *    Contributor" on the container ("Storage Blob Data Reader" is enough for a read-only open).
 *
 * Neither the key nor the connection string ever appears in an error message.
 */
export async function openAzureBlob(
  location: AzureLocation,
  settings: BackendSettings,
  options: OpenOptions = {},
  deps: AzureBlobDeps = {},
): Promise<AzureBlobBackend> {
  const env = deps.env ?? process.env;
  let service: BlobServiceClient;
  const key = env.AZURE_STORAGE_KEY;
  const connectionString = env.AZURE_STORAGE_CONNECTION_STRING;
  if (key) {
    const endpoint = settings.endpoint ?? defaultEndpoint(location.account);
    service = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(location.account, key), PIPELINE_OPTIONS);
  } else if (connectionString) {
    try {
      service = BlobServiceClient.fromConnectionString(connectionString, PIPELINE_OPTIONS);
    } catch {
      // No cause: the SDK's error could quote the string, and the string holds the key.
      throw new StoreError('AZURE_STORAGE_CONNECTION_STRING is not a valid storage connection string');
    }
    if (service.accountName !== location.account) {
      throw new StoreError(`AZURE_STORAGE_CONNECTION_STRING is for another storage account than ${location.account}`);
    }
    if (settings.endpoint !== undefined && !sameEndpoint(settings.endpoint, service.url)) {
      throw new StoreError('keystore.endpoint and AZURE_STORAGE_CONNECTION_STRING name different blob endpoints');
    }
  } else {
    const endpoint = settings.endpoint ?? defaultEndpoint(location.account);
    // The SDK would refuse to send a token in the clear on every call; say so once, at start-up.
    if (!endpoint.startsWith('https://')) {
      throw new StoreError(
        'Azure Blob Storage over http needs AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING (Entra ID tokens are only sent over https)',
      );
    }
    service = new BlobServiceClient(endpoint, await (deps.defaultCredential ?? loadDefaultCredential)(), PIPELINE_OPTIONS);
  }
  const container = service.getContainerClient(location.container);
  return new AzureBlobBackend(location, sdkPort(container, deps.pageSize), displayEndpoint(service.url), options.readOnly);
}

function defaultEndpoint(account: string): string {
  return `https://${account}.blob.core.windows.net`;
}

/** A service URL without its query (a SAS) and trailing slash. */
function displayEndpoint(url: string): string {
  const i = url.indexOf('?');
  return (i < 0 ? url : url.slice(0, i)).replace(/\/+$/, '');
}

function sameEndpoint(a: string, b: string): boolean {
  return displayEndpoint(a).toLowerCase() === displayEndpoint(b).toLowerCase();
}

async function loadDefaultCredential(): Promise<TokenCredential> {
  const { DefaultAzureCredential } = await import('@azure/identity');
  return new DefaultAzureCredential();
}

/** The azblob kind of store; see openAzureBlob for endpoint and credentials. */
export function open(location: AzureLocation, settings: BackendSettings, options?: OpenOptions): Promise<StoreBackend> {
  return openAzureBlob(location, settings, options);
}

// Compile-time conformance: the class is a StoreBackend, the module a BackendModule.
void (null as unknown as AzureBlobBackend satisfies StoreBackend);
void ({ open } satisfies BackendModule<'azblob'>);
