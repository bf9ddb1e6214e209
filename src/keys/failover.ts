import { zeroize } from '../crypto/secret.js';
import { GatewayError, type ErrorCode } from '../protocol/errors.js';

/** How a version wrapped under several KEKs is unwrapped. Defaults live in the config schema (`kms.*`). */
export interface FailoverSettings {
  /**
   * How long one KEK may take to answer before the next KEK is also asked, in ms; the first
   * answer wins and the others are cancelled. 0: all at once.
   * @default 250
   */
  readonly hedgeMs: number;
}

/** Starts `fn` after `ms`; returns what cancels it. Tests inject one that does not wait. */
export type Schedule = (ms: number, fn: () => void) => () => void;

export const realSchedule: Schedule = (ms, fn) => {
  const timer = setTimeout(fn, ms);
  return () => clearTimeout(timer);
};

/** A DEK one KEK unwrapped (already checked against the commitment tag); the caller owns `dek`. */
export interface Unwrapped {
  readonly dek: Buffer;
  readonly kek: string;
}

/** Codes after which the next KEK is worth asking; `stop` codes end the race at once. */
export interface RaceRules {
  /** An answer that ends the race with this error, whatever the other KEKs would say (revocation `any`). */
  readonly stopOn?: (code: ErrorCode) => boolean;
}

/**
 * Asks the KEKs in `order` for the DEK: the first at once, the next when the one before has
 * failed or has not answered within `hedgeMs`. The first success wins; the calls still running
 * are cancelled through their signal, and any DEK they return later is zeroized here. When all
 * fail, the error is the one the caller can act on (see `combine`).
 */
export function raceUnwrap(
  order: readonly string[],
  unwrap: (kek: string, signal: AbortSignal) => Promise<Buffer>,
  settings: FailoverSettings,
  rules: RaceRules = {},
  schedule: Schedule = realSchedule,
): Promise<Unwrapped> {
  return new Promise<Unwrapped>((resolve, reject) => {
    const controllers: AbortController[] = [];
    const errors: GatewayError[] = [];
    let next = 0;
    let running = 0;
    let done = false;
    let cancelHedge: (() => void) | undefined;

    const finish = (): void => {
      done = true;
      cancelHedge?.();
      for (const c of controllers) c.abort();
    };
    const launch = (): void => {
      cancelHedge?.();
      cancelHedge = undefined;
      if (done || next >= order.length) return;
      const kek = order[next++] as string;
      const controller = new AbortController();
      controllers.push(controller);
      running++;
      if (next < order.length) cancelHedge = schedule(settings.hedgeMs, launch);
      unwrap(kek, controller.signal).then(
        (dek) => {
          running--;
          if (done) return zeroize(dek);
          finish();
          resolve({ dek, kek });
        },
        (err: unknown) => {
          running--;
          if (done) return;
          const failure = err instanceof GatewayError ? err : new GatewayError('INTERNAL', 'KEK adapter failed');
          errors.push(failure);
          if (rules.stopOn?.(failure.code) === true) {
            finish();
            reject(failure);
          } else if (next < order.length) {
            launch();
          } else if (running === 0) {
            finish();
            reject(combine(errors));
          }
        },
      );
    };
    if (order.length === 0) reject(new GatewayError('NOT_FOUND', 'no such key version'));
    else launch();
  });
}

/**
 * One error for a version no KEK unwrapped. A transient failure anywhere makes it
 * KMS_UNAVAILABLE (or THROTTLED): asking again may work, and a stale DEK may be served
 * meanwhile. Else a denial; else the first error, in preference order.
 */
export function combine(errors: readonly GatewayError[]): GatewayError {
  const first = errors[0] as GatewayError;
  if (errors.length === 1) return first;
  const transient = errors.filter((e) => e.code === 'KMS_UNAVAILABLE' || e.code === 'THROTTLED');
  const codes = errors.map((e) => e.code).join(', ');
  const text = `none of the ${errors.length} KEKs of this key version could unwrap it (${codes})`;
  if (transient.length > 0) return new GatewayError(transient.every((e) => e.code === 'THROTTLED') ? 'THROTTLED' : 'KMS_UNAVAILABLE', text);
  if (errors.some((e) => e.code === 'KMS_DENIED')) return new GatewayError('KMS_DENIED', text);
  return new GatewayError(first.code, text);
}
