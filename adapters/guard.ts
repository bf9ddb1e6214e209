import { GatewayError, KmsError } from '../src/protocol/errors.js';
import { KEY_BYTES, copySecret, zeroize } from '../src/crypto/secret.js';
import type { GeneratedKey, KeyWrapper, WrapContext, WrappedKey } from './types.js';

/** Options for the invariants enforced around every adapter. */
export interface GuardOptions {
  /** Longest a single KMS call may take before it fails with `KMS_UNAVAILABLE`. */
  readonly timeoutMs: number;
  /** Called once per adapter call that reached the adapter (for tests and metrics). */
  readonly onCall?: (op: AdapterOp, kek: string) => void;
}

type Ctx = Pick<WrapContext, 'keyId' | 'version'>;

/** The adapter calls the guard counts and times. */
export type AdapterOp = 'wrap' | 'unwrap' | 'generate' | 'rewrap';

/**
 * Wraps an adapter with the invariants that must hold whichever cloud is
 * behind it, so no adapter has to get them right on its own: a deadline on
 * every call, a 32-byte DEK, buffers isolated from the adapter's (copied
 * into `Buffer.alloc` memory, the adapter's copy zeroized in `finally`), and
 * only classified errors escaping.
 */
export class GuardedWrapper {
  constructor(
    private readonly inner: KeyWrapper,
    private readonly options: GuardOptions,
  ) {}

  get kek(): string {
    return this.inner.kek;
  }

  get canGenerate(): boolean {
    return typeof this.inner.generate === 'function';
  }

  async wrap(dek: Buffer, ctx: Ctx): Promise<WrappedKey> {
    checkDek(dek);
    const lent = copySecret(dek);
    try {
      const out = await this.call('wrap', ctx, (c) => this.inner.wrap(lent, c));
      return isolateWrapped(out);
    } finally {
      zeroize(lent);
    }
  }

  async unwrap(wrapped: WrappedKey, ctx: Ctx): Promise<Buffer> {
    const input: WrappedKey = { ...wrapped, blob: Buffer.from(wrapped.blob) };
    let raw: Buffer | undefined;
    try {
      raw = await this.call('unwrap', ctx, (c) => this.inner.unwrap(input, c));
      checkDek(raw);
      return copySecret(raw);
    } finally {
      zeroize(raw);
    }
  }

  async generate(ctx: Ctx): Promise<GeneratedKey> {
    const generate = this.inner.generate?.bind(this.inner);
    if (!generate) throw new GatewayError('INTERNAL', 'adapter cannot generate keys');
    let out: GeneratedKey | undefined;
    try {
      out = await this.call('generate', ctx, generate);
      checkDek(out.dek);
      const dek = copySecret(out.dek);
      return { ...isolateWrapped(out), dek };
    } finally {
      zeroize(out?.dek);
    }
  }

  /**
   * Moves a blob to `to`'s KEK inside the KMS when the adapter can (AWS ReEncrypt);
   * undefined when it cannot, and the caller unwraps and wraps instead.
   */
  async rewrap(wrapped: WrappedKey, ctx: Ctx, to: GuardedWrapper): Promise<WrappedKey | undefined> {
    const rewrap = this.inner.rewrap?.bind(this.inner);
    if (!rewrap) return undefined;
    const input: WrappedKey = { ...wrapped, blob: Buffer.from(wrapped.blob) };
    const out = await this.call('rewrap', ctx, (c) => rewrap(input, c, to.inner));
    return out === undefined ? undefined : isolateWrapped(out);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async call<T>(op: AdapterOp, ctx: Ctx, fn: (c: WrapContext) => Promise<T>): Promise<T> {
    this.options.onCall?.(op, this.inner.kek);
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        controller.abort();
        reject(new KmsError('KMS_UNAVAILABLE', `KMS did not answer within ${this.options.timeoutMs} ms`));
      }, this.options.timeoutMs);
    });
    try {
      return await Promise.race([fn({ keyId: ctx.keyId, version: ctx.version, signal: controller.signal }), deadline]);
    } catch (err) {
      if (err instanceof GatewayError) throw err;
      throw new KmsError('INTERNAL', `KEK adapter failed during ${op}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }
}

function checkDek(dek: unknown): asserts dek is Buffer {
  if (!Buffer.isBuffer(dek) || dek.length !== KEY_BYTES) {
    throw new GatewayError('INTERNAL', `KEK adapter returned a DEK that is not ${KEY_BYTES} bytes`);
  }
}

function isolateWrapped(out: WrappedKey): WrappedKey {
  if (!Buffer.isBuffer(out.blob) || out.blob.length === 0) {
    throw new GatewayError('INTERNAL', 'KEK adapter returned an empty wrapped key');
  }
  const blob = Buffer.from(out.blob);
  return out.kekVersion === undefined ? { blob } : { blob, kekVersion: out.kekVersion };
}
