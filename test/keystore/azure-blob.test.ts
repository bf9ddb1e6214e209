// The azblob key store against Azurite (the shared one from test/setup/azurite.ts, one container for this file):
// the conformance suite, then what only this store has: credential selection, Azure's error messages, paging,
// and an outage with a restart (a private Azurite).
//
// Azurite 3.37 was checked to honour both conditions kmsgw relies on, for block-blob uploads: If-None-Match: *
// on an existing blob → 409 BlobAlreadyExists, If-Match with a stale, unknown or absent blob's ETag → 412
// ConditionNotMet; of 10 concurrent creates or swaps exactly one wins. The conformance race test keeps that true.
import { randomBytes } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import type { AccessToken, GetTokenOptions, TokenCredential } from '@azure/core-auth';
import { CredentialUnavailableError } from '@azure/identity';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { StoreError, type StoreBackend } from '../../src/keystore/backend.js';
import { conditionFailed, describeAzureError } from '../../src/keystore/azure/errors.js';
import { AzureBlobBackend, open, openAzureBlob, sdkPort, type AzureBlobDeps, type AzureBlobPort } from '../../src/keystore/azure/index.js';
import { openBackend, type BackendSettings } from '../../src/keystore/open.js';
import { parseStoreUrl, type StoreLocation } from '../../src/keystore/url.js';
import { azuriteConnectionString, azuriteServiceClient, startAzurite } from '../helpers/azurite.js';
import { freePort } from '../helpers/net.js';
import { describeBackendConformance } from './conformance.js';

type AzureLocation = Extract<StoreLocation, { kind: 'azblob' }>;

const azurite = inject('azurite');
const CONTAINER = `kmsgw-${randomBytes(5).toString('hex')}`;
const container = azuriteServiceClient(azurite).getContainerClient(CONTAINER);
const KEY_ENV = { AZURE_STORAGE_KEY: azurite.key };

beforeAll(async () => {
  await container.create();
});
afterAll(async () => {
  await container.delete();
});

let prefixes = 0;
const locations = new Map<StoreBackend, AzureLocation>();
const opened: StoreBackend[] = [];
afterAll(async () => {
  await Promise.allSettled(opened.map((b) => b.close()));
});

/** keystore settings with `endpoint` (null: none, the Azure default). */
const settings = (endpoint: string | null = azurite.endpoint): BackendSettings => ({
  endpoint: endpoint ?? undefined,
  forcePathStyle: false,
});
const newLocation = (over: Partial<AzureLocation> = {}): AzureLocation => ({
  kind: 'azblob',
  account: azurite.account,
  container: CONTAINER,
  prefix: `t${++prefixes}/`,
  ...over,
});
const signal = (): AbortSignal => AbortSignal.timeout(5_000);
const body = (text: string): Buffer => Buffer.from(text, 'utf8');

async function openAt(
  location: AzureLocation,
  deps: AzureBlobDeps = { env: KEY_ENV },
  endpoint?: string | null,
): Promise<AzureBlobBackend> {
  const backend = await openAzureBlob(location, settings(endpoint), {}, deps);
  locations.set(backend, location);
  opened.push(backend);
  return backend;
}

async function ids(backend: StoreBackend, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for await (const item of backend.list(prefix, signal())) out.push(item.id);
  return out;
}

/** A TCP port that nobody listens on. */
const closedEndpoint = async (scheme = 'http'): Promise<string> => `${scheme}://127.0.0.1:${await freePort()}/${azurite.account}`;

describeBackendConformance({
  name: 'azblob (Azurite)',
  open: (same) => openAt(same ? (locations.get(same) as AzureLocation) : newLocation()),
  unreachable: async () => openAt(newLocation(), { env: KEY_ENV }, await closedEndpoint()),
  putForeign: async (backend, name, data) => {
    const at = locations.get(backend) as AzureLocation;
    await container.getBlockBlobClient(at.prefix + name).upload(data, data.length);
  },
});

describe('azblob backend: endpoint and credentials', () => {
  it('defaults to https://<account>.blob.core.windows.net, without a request at open', async () => {
    const b = await openAt(newLocation({ account: 'kmsgwprod', container: 'keys', prefix: 'eu/' }), { env: KEY_ENV }, null);
    expect(b.endpoint).toBe('https://kmsgwprod.blob.core.windows.net');
    expect(b.location).toBe('azblob://kmsgwprod/keys/eu/');
  });

  it('opens through openBackend and the module open(), with AZURE_STORAGE_KEY from the environment', async () => {
    vi.stubEnv('AZURE_STORAGE_KEY', azurite.key);
    vi.stubEnv('AZURE_STORAGE_CONNECTION_STRING', 'not even parsed');
    try {
      const a = await openBackend(parseStoreUrl(`azblob://${azurite.account}/${CONTAINER}/via-open/`), settings());
      opened.push(a);
      expect(await a.write('k', body('1'), null, signal())).toMatchObject({ ok: true });
      const b = await open(newLocation({ prefix: 'via-open/' }), settings());
      opened.push(b);
      expect((await b.read('k', signal()))?.body.toString()).toBe('1');
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('takes AZURE_STORAGE_KEY before AZURE_STORAGE_CONNECTION_STRING', async () => {
    const wrongKey = randomBytes(64).toString('base64');
    const keyFirst = await openAt(newLocation(), {
      env: { AZURE_STORAGE_KEY: wrongKey, AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(azurite) },
    });
    await expect(keyFirst.read('k', signal())).rejects.toThrow(/access denied/);
  });

  it('uses AZURE_STORAGE_CONNECTION_STRING alone: its credential and its endpoint', async () => {
    const b = await openAt(newLocation(), { env: { AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(azurite) } }, null);
    expect(b.endpoint).toBe(azurite.endpoint);
    const made = await b.write('cs', body('x'), null, signal());
    expect(made.ok && (await b.read('cs', signal()))?.revision).toBe(made.ok && made.revision);
    // The same endpoint in keystore.endpoint is fine (trailing slash and case aside).
    await openAt(newLocation(), { env: { AZURE_STORAGE_CONNECTION_STRING: azuriteConnectionString(azurite) } }, `${azurite.endpoint}/`);
  });

  it('refuses a connection string for another account or endpoint, or one that does not parse, without quoting it', async () => {
    const cs = azuriteConnectionString(azurite);
    const refuse = async (loc: AzureLocation, conn: string, endpoint: string | null, message: RegExp): Promise<void> => {
      const err: unknown = await openAzureBlob(loc, settings(endpoint), {}, { env: { AZURE_STORAGE_CONNECTION_STRING: conn } }).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(StoreError);
      expect((err as Error).message).toMatch(message);
      expect((err as Error).message).not.toContain(azurite.key);
      expect((err as Error).message).not.toContain('AccountKey');
    };
    await refuse(newLocation({ account: 'otheraccount' }), cs, null, /another storage account than otheraccount/);
    await refuse(newLocation(), cs, await closedEndpoint(), /name different blob endpoints/);
    await refuse(newLocation(), `AccountName=x;AccountKey=${azurite.key}`, null, /not a valid storage connection string/);
  });

  it('otherwise uses DefaultAzureCredential (Entra ID) with the storage scope, and only over https', async () => {
    const scopes: string[] = [];
    const fake: TokenCredential = {
      getToken: async (s: string | string[], _o?: GetTokenOptions): Promise<AccessToken> => {
        scopes.push(...(Array.isArray(s) ? s : [s]));
        return { token: 'test-token', expiresOnTimestamp: Date.now() + 3_600_000 };
      },
    };
    const deps = { env: {}, defaultCredential: async () => fake };
    await expect(openAzureBlob(newLocation(), settings(azurite.endpoint), {}, deps)).rejects.toThrow(
      /over http needs AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING/,
    );
    // https to a closed port: the token is fetched, then the connection is refused.
    const b = await openAt(newLocation(), deps, await closedEndpoint('https'));
    await expect(b.read('k', signal())).rejects.toThrow('Azure Blob Storage unreachable (ECONNREFUSED)');
    expect(scopes).toContain('https://storage.azure.com/.default');

    const none = await openAt(
      newLocation(),
      {
        env: {},
        defaultCredential: async () => ({
          getToken: () => Promise.reject(new CredentialUnavailableError('no environment, no managed identity')),
        }),
      },
      await closedEndpoint('https'),
    );
    await expect(none.read('k', signal())).rejects.toThrow('no usable Azure credential for Blob Storage');
  });
});

describe('azblob backend: failures and paging', () => {
  it('reports a wrong account key as "access denied" on every call, never with the key', async () => {
    const wrongKey = randomBytes(64).toString('base64');
    const b = await openAt(newLocation(), { env: { AZURE_STORAGE_KEY: wrongKey } });
    const failures = await Promise.all([
      b.read('k', signal()).catch((e: unknown) => e),
      b.write('k', body('x'), null, signal()).catch((e: unknown) => e),
      ids(b).catch((e: unknown) => e),
    ]);
    for (const err of failures) {
      expect(err).toBeInstanceOf(StoreError);
      expect((err as StoreError).message).toBe('Azure Blob Storage access denied (AuthorizationFailure)');
      expect((err as StoreError).message).not.toContain(wrongKey.slice(0, 12));
      expect((err as StoreError).cause).toBeDefined();
    }
  });

  it('names a container that does not exist', async () => {
    const b = await openAt(newLocation({ container: 'kmsgw-no-such-container' }));
    const message = 'Azure blob container kmsgw-no-such-container does not exist in storage account devstoreaccount1';
    await expect(b.read('k', signal())).rejects.toThrow(message);
    await expect(b.write('k', body('x'), null, signal())).rejects.toThrow(message);
    await expect(ids(b)).rejects.toThrow(message);
  });

  it('cuts a call off at its signal when the store does not answer', async () => {
    // Accepts connections and never answers.
    const sockets = new Set<Socket>();
    const silent = createServer((s) => sockets.add(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const port = (silent.address() as { port: number }).port;
      const b = await openAt(newLocation(), { env: KEY_ENV }, `http://127.0.0.1:${port}/${azurite.account}`);
      const started = performance.now();
      await expect(b.read('k', AbortSignal.timeout(300))).rejects.toThrow('Azure Blob Storage request timed out');
      await expect(b.write('k', body('x'), null, AbortSignal.timeout(300))).rejects.toThrow('Azure Blob Storage request timed out');
      expect(performance.now() - started).toBeLessThan(2_500);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });

  it('lists page by page (the service returns a continuation token)', async () => {
    const loc = newLocation();
    const pages: number[] = [];
    const real = sdkPort(container, 4);
    const counting: AzureBlobPort = {
      ...real,
      async *listPages(prefix, s) {
        for await (const page of real.listPages(prefix, s)) {
          pages.push(page.length);
          yield page;
        }
      },
    };
    const b = new AzureBlobBackend(loc, counting, azurite.endpoint);
    const written = Array.from({ length: 10 }, (_, i) => `p/${i}`);
    await Promise.all(written.map((id) => b.write(id, body('{}'), null, signal())));
    expect((await ids(b)).sort()).toEqual(written.sort());
    expect(pages).toEqual([4, 4, 2]);
    expect(await ids(b, 'p/1')).toEqual(['p/1']);
  });

  it('refuses writes when read-only, and every call once closed', async () => {
    const loc = newLocation();
    const writer = await openAt(loc);
    await writer.write('k', body('v'), null, signal());
    const reader = await openAzureBlob(loc, settings(), { readOnly: true }, { env: KEY_ENV });
    expect((await reader.read('k', signal()))?.body.toString()).toBe('v');
    await expect(reader.write('k', body('w'), null, signal())).rejects.toThrow('key store was opened read-only');
    await reader.close();
    await reader.close();
    await expect(reader.read('k', signal())).rejects.toThrow('key store is closed');
    await expect(ids(reader)).rejects.toThrow('key store is closed');
  });

  it('fails as unreachable while Azurite is down and works again after a restart (data kept on disk)', async () => {
    const emu = await startAzurite({ keepData: true });
    try {
      await azuriteServiceClient(emu).getContainerClient('outage').create();
      const b = await openAzureBlob(newLocation({ container: 'outage' }), settings(emu.endpoint), {}, { env: KEY_ENV });
      const made = await b.write('k', body('before'), null, signal());
      await emu.stop();
      await expect(b.read('k', signal())).rejects.toThrow('Azure Blob Storage unreachable (ECONNREFUSED)');
      await emu.start();
      const after = await b.read('k', signal());
      expect(after?.body.toString()).toBe('before');
      expect(made.ok && after?.revision).toBe(made.ok && made.revision);
    } finally {
      await emu.dispose();
    }
  });
});

describe('azblob error mapping (what Azurite cannot produce)', () => {
  const where = { account: 'acct', container: 'keys' };
  const rest = (statusCode: number | undefined, code: string | undefined) =>
    Object.assign(new Error('service prose'), { statusCode, code });

  it('calls only a failed condition a conflict: not a lease or an archived blob, which a retry would never get past', () => {
    expect(conditionFailed(rest(412, 'ConditionNotMet'), '"0x1"')).toBe(true);
    expect(conditionFailed(rest(409, 'BlobAlreadyExists'), null)).toBe(true);
    expect(conditionFailed(rest(404, 'BlobNotFound'), '"0x1"')).toBe(true);
    expect(conditionFailed(rest(404, 'BlobNotFound'), null)).toBe(false);
    expect(conditionFailed(rest(412, 'LeaseIdMissing'), '"0x1"')).toBe(false);
    expect(conditionFailed(rest(409, 'LeaseIdMissing'), null)).toBe(false);
    expect(conditionFailed(rest(409, 'BlobArchived'), '"0x1"')).toBe(false);
    expect(describeAzureError(rest(412, 'LeaseIdMissing'), 'write', where)).toBe('Azure Blob Storage write failed: 412 (LeaseIdMissing)');
  });

  it('says throttled, service error, TLS; never the service prose, nor a code that is not a plain name', () => {
    expect(describeAzureError(rest(503, 'ServerBusy'), 'read', where)).toBe('Azure Blob Storage is throttling requests (ServerBusy)');
    expect(describeAzureError(rest(500, 'InternalError'), 'list', where)).toBe('Azure Blob Storage service error 500 (InternalError)');
    expect(describeAzureError(rest(undefined, 'SELF_SIGNED_CERT_IN_CHAIN'), 'read', where)).toBe(
      'Azure Blob Storage TLS certificate not trusted (SELF_SIGNED_CERT_IN_CHAIN)',
    );
    expect(describeAzureError(rest(403, 'Bad code; key=abc'), 'read', where)).toBe('Azure Blob Storage access denied');
    expect(describeAzureError(new Error('boom'), 'write', where)).toBe('Azure Blob Storage write failed: unexpected error');
  });
});
