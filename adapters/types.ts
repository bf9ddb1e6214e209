import type { AdapterSettings } from './settings.js';

/**
 * The one interface every KEK adapter implements, in the spirit of
 * go-kms-wrapping's `Wrapper`: it wraps and unwraps DEKs under one KEK and
 * knows nothing of sockets, the protocol or the cache.
 */

/** Where a DEK belongs; adapters bind it into the wrap as associated data or context. */
export interface WrapContext {
  /** Key id without `@version`. */
  readonly keyId: string;
  /** DEK version, 1-based. */
  readonly version: number;
  /** Aborted when the gateway's per-call timeout expires; pass it to the SDK. */
  readonly signal: AbortSignal;
}

/** A DEK as the KMS wrapped it. */
export interface WrappedKey {
  /** Opaque blob, stored as returned. */
  readonly blob: Buffer;
  /** Provider's KEK version that made the blob (GCP CryptoKeyVersion, Azure kid), when it tells. */
  readonly kekVersion?: string;
}

/** A DEK generated inside the KMS, with its wrapped form. */
export interface GeneratedKey extends WrappedKey {
  /** Plaintext DEK; the caller zeroizes it. */
  readonly dek: Buffer;
}

/** One KEK, behind one cloud (or the local file). */
export interface KeyWrapper {
  /** The KEK URI this wrapper was built for. */
  readonly kek: string;
  /** Wraps `dek` (which the adapter must not keep or modify). */
  wrap(dek: Buffer, ctx: WrapContext): Promise<WrappedKey>;
  /** Unwraps a stored blob; returns a buffer the caller owns and zeroizes. */
  unwrap(wrapped: WrappedKey, ctx: WrapContext): Promise<Buffer>;
  /** Optional: a DEK whose entropy comes from the KMS (AWS GenerateDataKey). */
  generate?(ctx: WrapContext): Promise<GeneratedKey>;
  /**
   * Optional: move a blob to KEK `to` without the DEK leaving the KMS (AWS ReEncrypt).
   * Resolves undefined when `to` cannot be reached that way; the gateway then unwraps and wraps.
   */
  rewrap?(wrapped: WrappedKey, ctx: WrapContext, to: KeyWrapper): Promise<WrappedKey | undefined>;
  /**
   * Releases this wrapper's hold on its client (the last holder closes it) and
   * zeroizes any key material it keeps. Idempotent; called at shutdown, and when the
   * registry drops the wrapper (never while a call on it is running).
   */
  close(): Promise<void>;
}

/** Settings every adapter factory receives. */
export interface AdapterOptions {
  /** Folder that relative `local://` paths are resolved against. */
  readonly dataDir: string;
  /** `kms.adapters`, already validated at start-up; absent: every default. */
  readonly settings?: AdapterSettings;
  /** The gateway's per-call deadline in ms, for SDK-level timeouts. */
  readonly timeoutMs?: number;
}

/** What each `adapters/<cloud>/index.ts` exports. */
export interface AdapterModule {
  createWrapper(kek: string, options: AdapterOptions): KeyWrapper;
}
