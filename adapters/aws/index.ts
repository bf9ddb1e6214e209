import {
  DecryptCommand,
  EncryptCommand,
  GenerateDataKeyCommand,
  KMSClient,
  ReEncryptCommand,
  type DecryptCommandInput,
  type EncryptCommandInput,
  type GenerateDataKeyCommandInput,
  type ReEncryptCommandInput,
} from '@aws-sdk/client-kms';
import { GatewayError } from '../../src/protocol/errors.js';
import { DEFAULT_ADAPTER_SETTINGS } from '../settings.js';
import { SharedClients, classifying, responseBytes, type Closable, type Lease } from '../support.js';
import type { AdapterModule, AdapterOptions, GeneratedKey, KeyWrapper, WrapContext, WrappedKey } from '../types.js';
import { classify } from './classify.js';
import type { AwsSettings } from './settings.js';

export { classify } from './classify.js';

/** What the adapter needs from AWS KMS: four calls, each cancellable. The SDK client by default. */
export interface AwsKmsPort extends Closable {
  generateDataKey(
    input: GenerateDataKeyCommandInput,
    signal: AbortSignal,
  ): Promise<{ Plaintext?: Uint8Array; CiphertextBlob?: Uint8Array; KeyId?: string }>;
  encrypt(input: EncryptCommandInput, signal: AbortSignal): Promise<{ CiphertextBlob?: Uint8Array; KeyId?: string }>;
  decrypt(input: DecryptCommandInput, signal: AbortSignal): Promise<{ Plaintext?: Uint8Array; KeyId?: string }>;
  reEncrypt(input: ReEncryptCommandInput, signal: AbortSignal): Promise<{ CiphertextBlob?: Uint8Array; KeyId?: string }>;
}

/** A parsed `aws-kms://` URI. */
export interface AwsKek {
  /** What KMS calls take as KeyId: a key ARN, an alias ARN or `alias/<name>`. */
  readonly keyId: string;
  /** From the ARN, when there is one. */
  readonly region?: string;
}

const ARN_RE = /^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:(key\/[A-Za-z0-9-]+|alias\/[A-Za-z0-9/_-]+)$/;
const ALIAS_RE = /^alias\/[A-Za-z0-9/_-]+$/;

/** `aws-kms://<key ARN>`, `aws-kms://<alias ARN>` or `aws-kms://alias/<name>`. */
export function parseAwsKek(kek: string): AwsKek {
  const body = kek.startsWith('aws-kms://') ? kek.slice('aws-kms://'.length) : '';
  const arn = ARN_RE.exec(body);
  if (arn) return { keyId: body, region: arn[1] };
  if (ALIAS_RE.test(body) && !body.startsWith('alias/aws/')) return { keyId: body };
  throw new GatewayError('BAD_REQUEST', 'aws-kms KEK URI must be aws-kms://<key or alias ARN> or aws-kms://alias/<name>');
}

/** Binds a blob to its place: moved to another id or version, KMS refuses it. */
export function encryptionContext(ctx: Pick<WrapContext, 'keyId' | 'version'>): Record<string, string> {
  return { 'kmsgw:key-id': ctx.keyId, 'kmsgw:version': String(ctx.version) };
}

/** The SDK client behind the port; closing the port destroys the client's sockets. */
export function sdkPort(client: KMSClient): AwsKmsPort {
  return {
    close: () => client.destroy(),
    generateDataKey: (input, signal) => client.send(new GenerateDataKeyCommand(input), { abortSignal: signal }),
    encrypt: (input, signal) => client.send(new EncryptCommand(input), { abortSignal: signal }),
    decrypt: (input, signal) => client.send(new DecryptCommand(input), { abortSignal: signal }),
    reEncrypt: (input, signal) => client.send(new ReEncryptCommand(input), { abortSignal: signal }),
  };
}

const bytes = (value: unknown, what: string) => responseBytes(value, 'AWS KMS', what);

/** A KEK in AWS KMS. New DEKs come from GenerateDataKey, so their entropy is the KMS's. */
export class AwsKmsWrapper implements KeyWrapper {
  private readonly target: AwsKek;

  constructor(
    readonly kek: string,
    private readonly lease: Lease<AwsKmsPort>,
    /** Identifies the account/endpoint, so ReEncrypt is only tried between KEKs of one client. */
    readonly location: string,
  ) {
    this.target = parseAwsKek(kek);
  }

  private get port(): AwsKmsPort {
    return this.lease.client;
  }

  async generate(ctx: WrapContext): Promise<GeneratedKey> {
    const out = await this.call(() =>
      this.port.generateDataKey({ KeyId: this.target.keyId, KeySpec: 'AES_256', EncryptionContext: encryptionContext(ctx) }, ctx.signal),
    );
    return {
      dek: bytes(out.Plaintext, 'plaintext key'),
      blob: Buffer.from(bytes(out.CiphertextBlob, 'wrapped key')),
      ...(out.KeyId ? { kekVersion: out.KeyId } : {}),
    };
  }

  async wrap(dek: Buffer, ctx: WrapContext): Promise<WrappedKey> {
    const out = await this.call(() =>
      this.port.encrypt({ KeyId: this.target.keyId, Plaintext: dek, EncryptionContext: encryptionContext(ctx) }, ctx.signal),
    );
    return { blob: Buffer.from(bytes(out.CiphertextBlob, 'wrapped key')), ...(out.KeyId ? { kekVersion: out.KeyId } : {}) };
  }

  async unwrap(wrapped: WrappedKey, ctx: WrapContext): Promise<Buffer> {
    // The KEK is always named: a blob is never sent to whatever key its header claims.
    const out = await this.call(() =>
      this.port.decrypt({ KeyId: this.target.keyId, CiphertextBlob: wrapped.blob, EncryptionContext: encryptionContext(ctx) }, ctx.signal),
    );
    return bytes(out.Plaintext, 'plaintext key');
  }

  /** ReEncrypt: the DEK never leaves KMS. Only between KEKs reached through the same client. */
  async rewrap(wrapped: WrappedKey, ctx: WrapContext, to: KeyWrapper): Promise<WrappedKey | undefined> {
    if (!(to instanceof AwsKmsWrapper) || to.location !== this.location) return undefined;
    const context = encryptionContext(ctx);
    const out = await this.call(() =>
      this.port.reEncrypt(
        {
          CiphertextBlob: wrapped.blob,
          SourceKeyId: this.target.keyId,
          SourceEncryptionContext: context,
          DestinationKeyId: to.target.keyId,
          DestinationEncryptionContext: context,
        },
        ctx.signal,
      ),
    );
    return { blob: Buffer.from(bytes(out.CiphertextBlob, 'wrapped key')), ...(out.KeyId ? { kekVersion: out.KeyId } : {}) };
  }

  close(): Promise<void> {
    return this.lease.release();
  }

  private call<T>(fn: () => Promise<T>): Promise<T> {
    return classifying(fn, classify);
  }
}

/** One SDK client per region, endpoint and client options, shared by the wrappers that use it. */
const awsClients = new SharedClients<string, AwsKmsPort>();

export function createWrapper(kek: string, options: AdapterOptions): KeyWrapper {
  const settings: AwsSettings = (options.settings ?? DEFAULT_ADAPTER_SETTINGS)['aws-kms'];
  const target = parseAwsKek(kek);
  const region = target.region ?? settings.region;
  const timeoutMs = options.timeoutMs ?? 2000;
  const endpoint = (region !== undefined ? settings.endpoints?.[region] : undefined) ?? settings.endpoint;
  const location = `${region ?? '(default region)'} ${endpoint ?? '(default endpoint)'}`;
  const lease = awsClients.acquire(JSON.stringify([location, settings.maxAttempts, timeoutMs]), () =>
    sdkPort(
      new KMSClient({
        ...(region ? { region } : {}),
        ...(endpoint ? { endpoint } : {}),
        maxAttempts: settings.maxAttempts,
        requestHandler: { connectionTimeout: timeoutMs, requestTimeout: timeoutMs },
      }),
    ),
  );
  return new AwsKmsWrapper(kek, lease, location) satisfies KeyWrapper;
}

export default { createWrapper } satisfies AdapterModule;
