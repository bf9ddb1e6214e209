import { readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import type { TokenCredential } from '@azure/core-auth';
import { CryptographyClient, KeyClient, type CryptographyClientOptions, type KeyWrapAlgorithm } from '@azure/keyvault-keys';
import { GatewayError, KmsError } from '../../src/protocol/errors.js';
import { DEFAULT_ADAPTER_SETTINGS } from '../settings.js';
import { SharedClients, classifying, responseBytes, type Closable, type Lease } from '../support.js';
import type { AdapterModule, AdapterOptions, KeyWrapper, WrapContext, WrappedKey } from '../types.js';
import { classify, type AzureOp } from './classify.js';
import { WRAP_ALGORITHMS, type AzureSettings } from './settings.js';

export { classify } from './classify.js';

// settings.ts imports only zod; here the compiler checks that it allows only algorithms the SDK knows.
WRAP_ALGORITHMS satisfies readonly KeyWrapAlgorithm[];

/** What the adapter needs from Key Vault: the key's current version, wrapKey and unwrapKey on a kid. */
export interface AzureKeyPort extends Closable {
  /** The versioned kid of the key's current version. */
  currentKid(vaultUrl: string, name: string, limits: { timeoutMs: number; signal: AbortSignal }): Promise<string>;
  wrapKey(
    kid: string,
    algorithm: KeyWrapAlgorithm,
    key: Uint8Array,
    limits: { timeoutMs: number; signal: AbortSignal },
  ): Promise<{ result: Uint8Array; keyID?: string }>;
  unwrapKey(
    kid: string,
    algorithm: KeyWrapAlgorithm,
    blob: Uint8Array,
    limits: { timeoutMs: number; signal: AbortSignal },
  ): Promise<{ result: Uint8Array }>;
}

/** A parsed `azure-kv://` URI. */
export interface AzureKek {
  /** `https://<host>[:port]` */
  readonly vaultUrl: string;
  readonly name: string;
  readonly version?: string;
}

const URI_RE = /^azure-kv:\/\/([A-Za-z0-9.-]+(?::\d{1,5})?)\/keys\/([A-Za-z0-9-]{1,127})(?:\/([A-Za-z0-9]{32}))?$/;

/** `azure-kv://<vault host>[:port]/keys/<name>[/<version>]`. */
export function parseAzureKek(kek: string): AzureKek {
  const m = URI_RE.exec(kek);
  if (!m) throw new GatewayError('BAD_REQUEST', 'azure-kv KEK URI must be azure-kv://<vault host>[:port]/keys/<name>[/<version>]');
  return { vaultUrl: `https://${m[1]}`, name: m[2] as string, ...(m[3] ? { version: m[3] } : {}) };
}

/** The key URL (a kid without version, or with one) the SDK takes. */
export function keyUrl(kek: AzureKek, version = kek.version): string {
  return `${kek.vaultUrl}/keys/${kek.name}${version ? `/${version}` : ''}`;
}

/** True when `kid` is a version of exactly this vault's key (a stored kid is never trusted blindly). */
export function kidBelongsTo(kid: string, kek: AzureKek): boolean {
  const prefix = `${kek.vaultUrl}/keys/${kek.name}/`;
  if (!kid.startsWith(prefix)) return false;
  const version = kid.slice(prefix.length);
  return /^[A-Za-z0-9]{32}$/.test(version) && (kek.version === undefined || kek.version === version);
}

/**
 * A key in Azure Key Vault (or Managed HSM). Wrap has no associated data, so a
 * blob's binding to its key id and version rests on the gateway's key-commitment
 * tag. The exact key version that wrapped a blob (its kid) is stored with it, so
 * unwrap keeps working after the key is rotated in the vault.
 */
export class AzureKeyVaultWrapper implements KeyWrapper {
  private readonly target: AzureKek;

  constructor(
    readonly kek: string,
    private readonly lease: Lease<AzureKeyPort>,
    private readonly algorithm: KeyWrapAlgorithm,
    private readonly timeoutMs: number,
  ) {
    this.target = parseAzureKek(kek);
  }

  private get port(): AzureKeyPort {
    return this.lease.client;
  }

  async wrap(dek: Buffer, ctx: WrapContext): Promise<WrappedKey> {
    const limits = { timeoutMs: this.timeoutMs, signal: ctx.signal };
    // Wrap with an explicit version: the SDK reports for an unversioned key the kid it
    // fetched when its client was made, which is stale once the key rotates in the vault.
    const kid = this.target.version
      ? keyUrl(this.target)
      : await this.call('wrap', () => this.port.currentKid(this.target.vaultUrl, this.target.name, limits));
    if (!kidBelongsTo(kid, this.target)) throw new KmsError('INTERNAL', 'Azure Key Vault answered for another key');
    const res = await this.call('wrap', () => this.port.wrapKey(kid, this.algorithm, dek, limits));
    if (res.keyID !== undefined && res.keyID !== kid) throw new KmsError('INTERNAL', 'Azure Key Vault answered for another key');
    return { blob: Buffer.from(responseBytes(res.result, 'Azure Key Vault', 'wrapped key')), kekVersion: kid };
  }

  async unwrap(wrapped: WrappedKey, ctx: WrapContext): Promise<Buffer> {
    const kid = wrapped.kekVersion ?? keyUrl(this.target);
    if (wrapped.kekVersion !== undefined && !kidBelongsTo(kid, this.target)) {
      throw new KmsError('DECRYPT_FAILED', 'stored key version does not belong to this KEK');
    }
    const res = await this.call('unwrap', () =>
      this.port.unwrapKey(kid, this.algorithm, wrapped.blob, { timeoutMs: this.timeoutMs, signal: ctx.signal }),
    );
    return responseBytes(res.result, 'Azure Key Vault', 'unwrapped key');
  }

  close(): Promise<void> {
    return this.lease.release();
  }

  private call<T>(op: AzureOp, fn: () => Promise<T>): Promise<T> {
    return classifying(fn, (err) => classify(err, op));
  }
}

/** Options for the SDK clients: one attempt per call (the gateway's deadline is the budget; 429 is reported, not slept on). */
function sdkClientOptions(agent: Agent | undefined, extra: CryptographyClientOptions = {}): CryptographyClientOptions {
  return {
    retryOptions: { maxRetries: 0 },
    ...(agent
      ? {
          additionalPolicies: [
            {
              position: 'perCall' as const,
              policy: {
                name: 'kmsgwTrustedCa',
                sendRequest: (request, next) => {
                  request.agent = agent;
                  return next(request);
                },
              },
            },
          ],
        }
      : {}),
    ...extra,
  };
}

/**
 * The SDK behind the port: one KeyClient per vault, one CryptographyClient per kid.
 * The SDK clients have nothing to close; the agent that trusts `caFile` holds the
 * keep-alive sockets, so closing the port destroys it.
 */
export function sdkPort(credential: TokenCredential, settings: AzureSettings, extra?: CryptographyClientOptions): AzureKeyPort {
  const agent = settings.caFile ? new Agent({ ca: readFileSync(settings.caFile), keepAlive: true }) : undefined;
  const options = sdkClientOptions(agent, extra);
  const clients = new Map<string, CryptographyClient>();
  const client = (kid: string) => {
    let c = clients.get(kid);
    if (!c) {
      c = new CryptographyClient(kid, credential, options);
      clients.set(kid, c);
    }
    return c;
  };
  const keyClients = new Map<string, KeyClient>();
  const keyClient = (vaultUrl: string) => {
    let c = keyClients.get(vaultUrl);
    if (!c) {
      c = new KeyClient(vaultUrl, credential, options);
      keyClients.set(vaultUrl, c);
    }
    return c;
  };
  return {
    close: () => agent?.destroy(),
    currentKid: async (vaultUrl, name, limits) => {
      const key = await keyClient(vaultUrl).getKey(name, { abortSignal: limits.signal, requestOptions: { timeout: limits.timeoutMs } });
      if (typeof key.id !== 'string') throw new KmsError('INTERNAL', 'Azure Key Vault returned a key without an id');
      return key.id;
    },
    wrapKey: (kid, algorithm, key, limits) =>
      client(kid).wrapKey(algorithm, key, { abortSignal: limits.signal, requestOptions: { timeout: limits.timeoutMs } }),
    unwrapKey: (kid, algorithm, blob, limits) =>
      client(kid).unwrapKey(algorithm, blob, { abortSignal: limits.signal, requestOptions: { timeout: limits.timeoutMs } }),
  };
}

/** What can be injected in place of production defaults (tests, embedding). */
export interface AzureDeps {
  /** Default: `DefaultAzureCredential` from @azure/identity, loaded on first use. */
  readonly credential?: TokenCredential;
  /** Extra SDK client options (tests: `disableChallengeResourceVerification`). */
  readonly clientOptions?: CryptographyClientOptions;
}

let defaultCredential: TokenCredential | undefined;

async function loadDefaultCredential(): Promise<TokenCredential> {
  if (!defaultCredential) {
    const { DefaultAzureCredential } = await import('@azure/identity');
    defaultCredential = new DefaultAzureCredential();
  }
  return defaultCredential;
}

/** An adapter module with injected dependencies (the default module uses DefaultAzureCredential). */
export function azureModule(deps: AzureDeps = {}): AdapterModule {
  // The credential is resolved lazily so merely naming an azure-kv KEK loads no identity code.
  const credential: TokenCredential = {
    getToken: async (scopes, opts) => (deps.credential ?? (await loadDefaultCredential())).getToken(scopes, opts),
  };
  const ports = new SharedClients<string, AzureKeyPort>();
  return {
    createWrapper(kek: string, options: AdapterOptions): KeyWrapper {
      const settings = (options.settings ?? DEFAULT_ADAPTER_SETTINGS)['azure-kv'];
      parseAzureKek(kek); // before a port is held: a bad URI leaves nothing to release
      const lease = ports.acquire(JSON.stringify(settings), () => sdkPort(credential, settings, deps.clientOptions));
      return new AzureKeyVaultWrapper(kek, lease, settings.algorithm, options.timeoutMs ?? 2000) satisfies KeyWrapper;
    },
  } satisfies AdapterModule;
}

const defaultModule = azureModule();

export function createWrapper(kek: string, options: AdapterOptions): KeyWrapper {
  return defaultModule.createWrapper(kek, options);
}

export default { createWrapper } satisfies AdapterModule;
