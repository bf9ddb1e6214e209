import { GatewayError, KmsError, type ErrorCode } from '../src/protocol/errors.js';
import { KEY_BYTES, copySecret, zeroize } from '../src/crypto/secret.js';
import { Breaker, type BreakerSettings } from './breaker.js';
import { Saturated, type ConcurrencyLimit } from './limit.js';
import type { KekHealth } from './health.js';
import type { GeneratedKey, KeyWrapper, WrapContext, WrappedKey } from './types.js';

/** How calls failing with `KMS_UNAVAILABLE` or `THROTTLED` are tried again, inside the deadline. */
export interface RetrySettings {
  /** Attempts per call, the first included (1: no retry). */
  readonly attempts: number;
  /** Backoff before the second attempt, in ms; doubled for each further one, with full jitter. */
  readonly baseDelayMs: number;
  /** Longest backoff between two attempts, in ms (a Retry-After hint may ask for longer). */
  readonly maxDelayMs: number;
}

/** Options for the invariants enforced around every adapter. */
export interface GuardOptions {
  /** Longest a KMS call may take, retries included, before it fails with `KMS_UNAVAILABLE`. */
  readonly timeoutMs: number;
  /** Retries of outages and throttling. @default no retry */
  readonly retry?: RetrySettings;
  /** The circuit breaker of each KEK. @default none */
  readonly breaker?: BreakerSettings;
  /** Told how each call ended, so denials revoke and outages show. */
  readonly health?: KekHealth;
  /** KMS calls in flight at once, shared by every KEK (`kms.maxConcurrent`). @default no limit */
  readonly limit?: ConcurrencyLimit;
  /** Called once per attempt that reached the adapter (for tests). */
  readonly onCall?: (op: AdapterOp, kek: string) => void;
  /** Called once per attempt that reached the adapter, and once per call the breaker refused (metrics). */
  readonly observe?: (call: KmsCall) => void;
  /** Clock in ms for the breaker. @default Date.now */
  readonly now?: () => number;
  /** Waits between attempts (tests inject one that does not sleep). @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /** Jitter source in [0, 1). @default Math.random */
  readonly random?: () => number;
}

/** How one attempt on the KMS ended, for metrics. */
export const KMS_OUTCOMES = ['ok', 'denied', 'unavailable', 'throttled', 'invalid', 'error', 'breaker_open', 'cancelled'] as const;
export type KmsOutcome = (typeof KMS_OUTCOMES)[number];

/** One attempt (or one refusal by the breaker), as `observe` sees it. */
export interface KmsCall {
  readonly op: AdapterOp;
  readonly kek: string;
  readonly outcome: KmsOutcome;
  readonly seconds: number;
}

const OUTCOME_OF: Partial<Record<ErrorCode, KmsOutcome>> = {
  KMS_DENIED: 'denied',
  KMS_UNAVAILABLE: 'unavailable',
  THROTTLED: 'throttled',
  DECRYPT_FAILED: 'invalid',
};

/** Errors worth another attempt: the KMS did not answer, or asked us to slow down. */
function transient(err: GatewayError): boolean {
  return err.code === 'KMS_UNAVAILABLE' || err.code === 'THROTTLED';
}

const sleepFor = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

/** The caller's side of a call: where the DEK belongs, and optionally a signal that cancels the call (hedging). */
type Ctx = Pick<WrapContext, 'keyId' | 'version'> & { readonly signal?: AbortSignal };

/** A call its caller cancelled: it says nothing about the KMS, so no health, breaker or retry sees it. */
export class Cancelled extends GatewayError {
  constructor() {
    super('KMS_UNAVAILABLE', 'KMS call cancelled: another KEK answered first');
  }
}

/** The adapter calls the guard counts and times. */
export type AdapterOp = 'wrap' | 'unwrap' | 'generate' | 'rewrap';

/**
 * Wraps an adapter with the invariants that must hold whichever cloud is
 * behind it, so no adapter has to get them right on its own: a deadline on
 * every call (retries of outages and throttling inside it, a circuit breaker
 * per KEK), a 32-byte DEK, buffers isolated from the adapter's (copied into
 * `Buffer.alloc` memory, the adapter's copy zeroized in `finally`), only
 * classified errors escaping, and every outcome told to the KEK's health.
 */
export class GuardedWrapper {
  private readonly breaker: Breaker | undefined;
  private readonly now: () => number;

  constructor(
    private readonly inner: KeyWrapper,
    private readonly options: GuardOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.breaker = options.breaker ? new Breaker(options.breaker, this.now) : undefined;
  }

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

  /**
   * Runs one operation on the KMS: through the breaker, with retries of transient failures while
   * the deadline allows, each attempt aborted at the deadline. Resolves or throws a GatewayError.
   */
  private async call<T>(op: AdapterOp, ctx: Ctx, fn: (c: WrapContext) => Promise<T>): Promise<T> {
    const kek = this.inner.kek;
    const deadline = this.now() + this.options.timeoutMs;
    const attempts = this.options.retry?.attempts ?? 1;
    for (let attempt = 1; ; attempt++) {
      if (ctx.signal?.aborted === true) throw new Cancelled();
      const admission = this.breaker?.admit() ?? { ok: true, probe: false };
      if (!admission.ok) {
        this.options.observe?.({ op, kek, outcome: 'breaker_open', seconds: 0 });
        throw admission.error;
      }
      let err: GatewayError;
      try {
        const result = await this.attempt(op, ctx, fn, Math.max(1, deadline - this.now()));
        this.breaker?.answered(admission.probe);
        // Only an unwrap proves a denied KEK usable again (a KMS may allow encrypting and not decrypting).
        if (op === 'unwrap' || this.options.health?.denied(kek) !== true) this.options.health?.record(kek, 'ok');
        return result;
      } catch (caught) {
        err = caught as GatewayError;
      }
      if (err instanceof Cancelled || err instanceof Saturated) {
        this.breaker?.released(admission.probe);
        throw err;
      }
      if (!transient(err)) {
        // INTERNAL is the adapter's own failure: it tells nothing about the KMS.
        if (err.code === 'INTERNAL') this.breaker?.released(admission.probe);
        else this.breaker?.answered(admission.probe);
        this.options.health?.record(kek, err.code);
        throw err;
      }
      const hint = err instanceof KmsError ? err.retryAfterMs : undefined;
      const wait = Math.max(hint ?? 0, this.backoff(attempt));
      // Retried only if the wait and a useful attempt fit before the deadline; else the caller
      // hears now, not when the deadline passes.
      if (attempt >= attempts || this.now() + wait >= deadline) {
        this.breaker?.failed(admission.probe, hint);
        this.options.health?.record(kek, err.code);
        throw err;
      }
      this.breaker?.released(admission.probe);
      await (this.options.sleep ?? sleepFor)(wait);
    }
  }

  /** Full-jitter exponential backoff before attempt `attempt + 1`. */
  private backoff(attempt: number): number {
    const retry = this.options.retry;
    if (retry === undefined) return 0;
    const ceiling = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (attempt - 1));
    return Math.floor((this.options.random ?? Math.random)() * ceiling);
  }

  /** Waits for a slot under `kms.maxConcurrent` (inside the deadline), then makes one attempt. */
  private async attempt<T>(op: AdapterOp, ctx: Ctx, fn: (c: WrapContext) => Promise<T>, timeoutMs: number): Promise<T> {
    const waitStarted = this.now();
    const release = await this.options.limit?.acquire(timeoutMs);
    const left = Math.max(1, timeoutMs - (this.now() - waitStarted));
    try {
      return await this.attemptNow(op, ctx, fn, left);
    } catch (err) {
      // Most of the deadline went waiting for a slot here: a timeout then says the gateway was the
      // bottleneck, not the KMS, so it must not count against the KEK (breaker, health).
      if (this.options.limit !== undefined && left < timeoutMs / 2 && err instanceof KmsError && err.code === 'KMS_UNAVAILABLE') {
        throw new Saturated(this.options.limit.max);
      }
      throw err;
    } finally {
      release?.();
    }
  }

  /** One attempt with its own deadline; only GatewayErrors escape. */
  private async attemptNow<T>(op: AdapterOp, ctx: Ctx, fn: (c: WrapContext) => Promise<T>, timeoutMs: number): Promise<T> {
    this.options.onCall?.(op, this.inner.kek);
    const started = performance.now();
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    let cancel: (() => void) | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        controller.abort();
        reject(new KmsError('KMS_UNAVAILABLE', `KMS did not answer within ${this.options.timeoutMs} ms`));
      }, timeoutMs);
      cancel = () => {
        controller.abort();
        reject(new Cancelled());
      };
      ctx.signal?.addEventListener('abort', cancel, { once: true });
    });
    let outcome: KmsOutcome = 'error';
    try {
      const result = await Promise.race([fn({ keyId: ctx.keyId, version: ctx.version, signal: controller.signal }), deadline]);
      outcome = 'ok';
      return result;
    } catch (err) {
      const safe = err instanceof GatewayError ? err : new KmsError('INTERNAL', `KEK adapter failed during ${op}`, { cause: err });
      outcome = safe instanceof Cancelled ? 'cancelled' : (OUTCOME_OF[safe.code] ?? 'error');
      throw safe;
    } finally {
      clearTimeout(timer);
      if (cancel !== undefined) ctx.signal?.removeEventListener('abort', cancel);
      this.options.observe?.({ op, kek: this.inner.kek, outcome, seconds: (performance.now() - started) / 1000 });
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
