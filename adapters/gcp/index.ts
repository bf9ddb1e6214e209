import { readFileSync } from 'node:fs';
import { KeyManagementServiceClient, protos } from '@google-cloud/kms';
import { createBackoffSettings, createRetryOptions, grpc, type CallOptions } from 'google-gax';
import { crc32c } from '../../src/crypto/crc32c.js';
import { GatewayError, KmsError } from '../../src/protocol/errors.js';
import { DEFAULT_ADAPTER_SETTINGS } from '../settings.js';
import { SharedClients, classifying, responseBytes, type Closable, type Lease } from '../support.js';
import type { AdapterModule, AdapterOptions, KeyWrapper, WrapContext, WrappedKey } from '../types.js';
import { classify, int64, type GcpOp } from './classify.js';
import type { GcpSettings } from './settings.js';

export { classify, GRPC, int64 } from './classify.js';

type EncryptRequest = protos.google.cloud.kms.v1.IEncryptRequest;
type EncryptResponse = protos.google.cloud.kms.v1.IEncryptResponse;
type DecryptRequest = protos.google.cloud.kms.v1.IDecryptRequest;
type DecryptResponse = protos.google.cloud.kms.v1.IDecryptResponse;

/** Per-call limits the adapter passes down. */
export interface CallLimits {
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
}

/** What the adapter needs from Cloud KMS: Encrypt and Decrypt. The SDK client by default. */
export interface GcpKmsPort extends Closable {
  encrypt(request: EncryptRequest, limits: CallLimits): Promise<EncryptResponse>;
  decrypt(request: DecryptRequest, limits: CallLimits): Promise<DecryptResponse>;
}

const KEY_NAME_RE =
  /^projects\/[a-z0-9-]{1,63}\/locations\/[a-z0-9-]{1,63}\/keyRings\/[A-Za-z0-9_-]{1,63}\/cryptoKeys\/[A-Za-z0-9_-]{1,63}$/;

/** `gcp-kms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>` → the CryptoKey name. */
export function parseGcpKek(kek: string): string {
  const name = kek.startsWith('gcp-kms://') ? kek.slice('gcp-kms://'.length) : '';
  if (!KEY_NAME_RE.test(name)) {
    throw new GatewayError('BAD_REQUEST', 'gcp-kms KEK URI must be gcp-kms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>');
  }
  return name;
}

/** AAD that binds a blob to its place: `kmsgw/v1 <key-id> <version>`. */
export function wrapAad(ctx: Pick<WrapContext, 'keyId' | 'version'>): Buffer {
  return Buffer.from(`kmsgw/v1 ${ctx.keyId} ${ctx.version}`, 'latin1');
}

function integrityError(what: string): KmsError {
  return new KmsError('KMS_UNAVAILABLE', `Cloud KMS: ${what} failed its integrity check`);
}

const asBuffer = (value: unknown, what: string) => responseBytes(value, 'Cloud KMS', what);

/**
 * A CryptoKey in Cloud KMS. DEKs come from the gateway's CSPRNG (Cloud KMS has
 * no data-key call); every call carries the AAD and the CRC32C fields Google
 * asks clients to use, and every response is checked before it is trusted.
 */
export class GcpKmsWrapper implements KeyWrapper {
  private readonly keyName: string;

  constructor(
    readonly kek: string,
    private readonly lease: Lease<GcpKmsPort>,
    private readonly timeoutMs: number,
  ) {
    this.keyName = parseGcpKek(kek);
  }

  private get port(): GcpKmsPort {
    return this.lease.client;
  }

  async wrap(dek: Buffer, ctx: WrapContext): Promise<WrappedKey> {
    const aad = wrapAad(ctx);
    const res = await this.call('encrypt', () =>
      this.port.encrypt(
        {
          name: this.keyName,
          plaintext: dek,
          additionalAuthenticatedData: aad,
          plaintextCrc32c: { value: crc32c(dek) },
          additionalAuthenticatedDataCrc32c: { value: crc32c(aad) },
        },
        { timeoutMs: this.timeoutMs, signal: ctx.signal },
      ),
    );
    if (res.verifiedPlaintextCrc32c !== true || res.verifiedAdditionalAuthenticatedDataCrc32c !== true) {
      throw integrityError('the request');
    }
    if (typeof res.name !== 'string' || !res.name.startsWith(`${this.keyName}/cryptoKeyVersions/`)) {
      throw new KmsError('INTERNAL', 'Cloud KMS answered for another key');
    }
    const blob = Buffer.from(asBuffer(res.ciphertext, 'ciphertext'));
    if (int64(res.ciphertextCrc32c) !== crc32c(blob)) throw integrityError('the ciphertext');
    return { blob, kekVersion: res.name };
  }

  async unwrap(wrapped: WrappedKey, ctx: WrapContext): Promise<Buffer> {
    const aad = wrapAad(ctx);
    const res = await this.call('decrypt', () =>
      this.port.decrypt(
        {
          name: this.keyName,
          ciphertext: wrapped.blob,
          additionalAuthenticatedData: aad,
          ciphertextCrc32c: { value: crc32c(wrapped.blob) },
          additionalAuthenticatedDataCrc32c: { value: crc32c(aad) },
        },
        { timeoutMs: this.timeoutMs, signal: ctx.signal },
      ),
    );
    const dek = asBuffer(res.plaintext, 'plaintext');
    if (int64(res.plaintextCrc32c) !== crc32c(dek)) {
      dek.fill(0);
      throw integrityError('the plaintext');
    }
    return dek;
  }

  close(): Promise<void> {
    return this.lease.release();
  }

  private call<T>(op: GcpOp, fn: () => Promise<T>): Promise<T> {
    return classifying(fn, (err) => classify(err, op));
  }
}

/** Runs a google-gax call once, with a deadline, cancelled by `signal`. */
function withLimits<T>(
  start: (options: CallOptions) => Promise<[T, ...unknown[]]> & { cancel?: () => void },
  limits: CallLimits,
): Promise<T> {
  // The client's defaults retry for up to 600 s. The gateway's guard retries UNAVAILABLE and
  // RESOURCE_EXHAUSTED itself (kms.retry, inside kms.timeoutMs, counted by the breaker), so here
  // one attempt: no retry codes.
  const t = limits.timeoutMs;
  const call = start({ timeout: t, retry: createRetryOptions([], createBackoffSettings(0, 1, 0, t, 1, t, t)) });
  const cancel = () => call.cancel?.();
  limits.signal.addEventListener('abort', cancel, { once: true });
  return call.then(
    ([res]) => {
      limits.signal.removeEventListener('abort', cancel);
      return res;
    },
    (err: unknown) => {
      limits.signal.removeEventListener('abort', cancel);
      throw err;
    },
  );
}

/**
 * Longest a call waits for the gRPC channel to (re)connect before it is sent anyway, in ms; also
 * the channel's longest reconnect backoff, so a KMS that came back is reached within it.
 */
export const CONNECT_WAIT_MS = 250;

/**
 * Waits (at most CONNECT_WAIT_MS) for the client's channel to be connected. grpc-js fails a call at
 * once while its channel waits out a reconnect backoff, so without this the guard's quick retries
 * could all land in that wait just after the KMS came back. A KMS that stays down costs this wait.
 */
async function connected(client: KeyManagementServiceClient, limits: CallLimits): Promise<void> {
  const stub = (await client.initialize()) as unknown as Partial<Pick<grpc.Client, 'getChannel' | 'waitForReady'>>;
  if (stub.getChannel === undefined || stub.waitForReady === undefined) return;
  if (stub.getChannel().getConnectivityState(true) === grpc.connectivityState.READY) return;
  const wait = Math.min(CONNECT_WAIT_MS, limits.timeoutMs);
  await new Promise<void>((resolve) => {
    const done = () => (limits.signal.removeEventListener('abort', done), resolve());
    limits.signal.addEventListener('abort', done, { once: true });
    stub.waitForReady?.(Date.now() + wait, done);
  });
}

/** The SDK client behind the port; closing the port closes the client's gRPC channel. */
export function sdkPort(client: KeyManagementServiceClient): GcpKmsPort {
  return {
    close: () => client.close(),
    encrypt: async (request, limits) => {
      await connected(client, limits);
      return withLimits((o) => client.encrypt(request, o), limits);
    },
    decrypt: async (request, limits) => {
      await connected(client, limits);
      return withLimits((o) => client.decrypt(request, o), limits);
    },
  };
}

function newClient(settings: GcpSettings): KeyManagementServiceClient {
  const [host, port] = settings.endpoint ? settings.endpoint.split(':') : [undefined, undefined];
  return new KeyManagementServiceClient({
    universeDomain: settings.universeDomain,
    // Reconnect soon after an outage ends (grpc-js would otherwise back off up to 120 s).
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': CONNECT_WAIT_MS,
    ...(host ? { apiEndpoint: host, port: Number(port) } : {}),
    ...(settings.tls
      ? settings.caFile
        ? { sslCreds: grpc.credentials.createSsl(readFileSync(settings.caFile)) }
        : {}
      : { sslCreds: grpc.credentials.createInsecure() }),
  });
}

/** One client per settings, shared by the wrappers that use it. */
const gcpClients = new SharedClients<string, GcpKmsPort>();

export function createWrapper(kek: string, options: AdapterOptions): KeyWrapper {
  const settings = (options.settings ?? DEFAULT_ADAPTER_SETTINGS)['gcp-kms'];
  parseGcpKek(kek); // before a client is held: a bad URI leaves nothing to release
  const lease = gcpClients.acquire(JSON.stringify(settings), () => sdkPort(newClient(settings)));
  return new GcpKmsWrapper(kek, lease, options.timeoutMs ?? 2000) satisfies KeyWrapper;
}

export default { createWrapper } satisfies AdapterModule;
