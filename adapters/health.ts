import type { ErrorCode } from '../src/protocol/errors.js';

/** What the gateway last learned about a KEK from the KMS. */
export const KEK_STATES = ['ok', 'unavailable', 'denied', 'throttled'] as const;
export type KekState = (typeof KEK_STATES)[number];

/** One KEK's state, for readiness, metrics and the revocation rule. */
export interface KekStatus {
  readonly kek: string;
  /** `unknown` until a call on it has ended in success or a KMS error. */
  readonly state: KekState | 'unknown';
  /** The error code of the last failure, while the state is not `ok`. */
  readonly code?: ErrorCode;
  /** When the state last changed (ms, the health clock). */
  readonly since: number;
  /** When a call last told anything about this KEK (ms). */
  readonly checkedAt?: number;
}

/** The KMS errors that say something about the KEK itself; others (a bad blob, a bug) leave its state alone. */
const STATE_OF: Partial<Record<ErrorCode, KekState>> = {
  KMS_DENIED: 'denied',
  KMS_UNAVAILABLE: 'unavailable',
  THROTTLED: 'throttled',
};

type Listener = (now: KekStatus, before: KekStatus | undefined) => void;

/**
 * The last known state of each KEK, fed by every adapter call (through the guard) and by the
 * canary. A change is told to listeners at once: DekService zeroizes every DEK under a KEK the
 * moment it is denied, whoever saw the denial.
 */
export class KekHealth {
  private readonly byKek = new Map<string, KekStatus>();
  private readonly listeners: Listener[] = [];

  /** @param now clock in ms (tests inject one). @default Date.now */
  constructor(private readonly now: () => number = Date.now) {}

  /** Records the end of one call on `kek`: `ok`, or the error code it failed with. */
  record(kek: string, result: 'ok' | ErrorCode): void {
    const state = result === 'ok' ? 'ok' : STATE_OF[result];
    if (state === undefined) return;
    const t = this.now();
    const before = this.byKek.get(kek);
    // A denial sticks until the KEK answers again: an outage after it proves nothing was restored.
    const sticky = before?.state === 'denied' && state !== 'ok';
    if (before !== undefined && (sticky || (before.state === state && before.code === (result === 'ok' ? undefined : result)))) {
      this.byKek.set(kek, { ...before, checkedAt: t });
      return;
    }
    const now: KekStatus = { kek, state, ...(result === 'ok' ? {} : { code: result }), since: t, checkedAt: t };
    this.byKek.set(kek, now);
    for (const listener of this.listeners) listener(now, before);
  }

  /** Makes `kek` known (state `unknown`) without a call, e.g. the default KEK at start. */
  track(kek: string): void {
    if (!this.byKek.has(kek)) this.byKek.set(kek, { kek, state: 'unknown', since: this.now() });
  }

  /** Forgets a KEK nothing uses any more (bounded memory for KEKs that come and go). */
  forget(kek: string): void {
    this.byKek.delete(kek);
  }

  status(kek: string): KekStatus {
    return this.byKek.get(kek) ?? { kek, state: 'unknown', since: this.now() };
  }

  statuses(): KekStatus[] {
    return [...this.byKek.values()];
  }

  /** True while the KMS's last word on `kek` was a denial: nothing under it may be served. */
  denied(kek: string): boolean {
    return this.byKek.get(kek)?.state === 'denied';
  }

  onChange(listener: Listener): void {
    this.listeners.push(listener);
  }
}
