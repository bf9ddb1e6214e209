import type { KekStatus } from '../../adapters/health.js';

/** What `/readyz` reports. */
export interface Readiness {
  /** True when everything below is: the gateway can serve every KEK in use now. */
  readonly ready: boolean;
  /** The key store is open. */
  readonly store: boolean;
  /** Every configured listener is up. */
  readonly listening: boolean;
  /** Cache warm-up (`cache.warm`) has finished. */
  readonly warm: 'pending' | 'done';
  /** Each KEK in use and its last known state. */
  readonly keks: readonly KekStatus[];
}

/**
 * Ready once the store is open, the listeners are up, warm-up is done and every KEK in use is
 * `ok`. A KEK no call has told anything about yet (`unknown`) counts against readiness only
 * while a canary runs to learn it; without one, only failures are known.
 */
export function readinessOf(parts: Omit<Readiness, 'ready'>, canaryOn: boolean): Readiness {
  const keksOk = parts.keks.every((k) => k.state === 'ok' || (!canaryOn && k.state === 'unknown'));
  return { ready: parts.store && parts.listening && parts.warm === 'done' && keksOk, ...parts };
}
