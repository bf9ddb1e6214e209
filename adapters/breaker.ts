import { KmsError } from '../src/protocol/errors.js';

/** When one KEK's calls stop reaching the KMS for a while. Defaults live in the config schema (`kms.breaker`). */
export interface BreakerSettings {
  /** Calls in a row failing with `KMS_UNAVAILABLE` or `THROTTLED` (after their retries) that open the breaker. */
  readonly failures: number;
  /** How long an open breaker fails calls at once, in ms, before one probe call may try the KMS. */
  readonly openMs: number;
}

/** Whether a call may go to the KMS: as a normal call, as the one probe of a half-open breaker, or not. */
export type Admission = { readonly ok: true; readonly probe: boolean } | { readonly ok: false; readonly error: KmsError };

/**
 * A circuit breaker for one KEK, so a dead or throttling KMS costs a caller microseconds instead
 * of a deadline per request, and the KMS is not hammered while it recovers. Closed: calls go
 * through, and consecutive failures are counted. Open: calls fail at once for `openMs`. Then
 * half-open: one probe call goes through (the others still fail at once); its success closes the
 * breaker, its failure opens it again. A throttling hint from the KMS (Retry-After) holds calls
 * back until it passes, whatever the count.
 */
export class Breaker {
  private inARow = 0;
  private openUntil = 0;
  private probing = false;
  private notBefore = 0;

  constructor(
    private readonly settings: BreakerSettings,
    private readonly now: () => number,
  ) {}

  admit(): Admission {
    const t = this.now();
    if (t < this.notBefore) {
      return refuse('THROTTLED', `the KMS asked to wait; calls for this KEK resume in ${Math.ceil(this.notBefore - t)} ms`);
    }
    if (this.inARow < this.settings.failures) return { ok: true, probe: false };
    if (t < this.openUntil || this.probing) {
      const wait = Math.max(0, Math.ceil(this.openUntil - t));
      return refuse(
        'KMS_UNAVAILABLE',
        `KMS calls for this KEK are paused after ${this.inARow} failures in a row (circuit open; next try in ${wait} ms)`,
      );
    }
    this.probing = true;
    return { ok: true, probe: true };
  }

  /** The KMS answered (with a result or a refusal that is not an outage): the breaker closes. */
  answered(probe: boolean): void {
    if (probe) this.probing = false;
    this.inARow = 0;
  }

  /** The call failed with `KMS_UNAVAILABLE` or `THROTTLED` after its retries. */
  failed(probe: boolean, retryAfterMs: number | undefined): void {
    if (probe) this.probing = false;
    const t = this.now();
    if (retryAfterMs !== undefined) this.notBefore = Math.max(this.notBefore, t + retryAfterMs);
    this.inARow++;
    if (this.inARow >= this.settings.failures) this.openUntil = t + this.settings.openMs;
  }

  /** A call ended without telling anything about the KMS (the adapter itself failed): a probe may be tried again. */
  released(probe: boolean): void {
    if (probe) this.probing = false;
  }

  get open(): boolean {
    return this.inARow >= this.settings.failures;
  }
}

function refuse(code: 'THROTTLED' | 'KMS_UNAVAILABLE', text: string): Admission {
  return { ok: false, error: new KmsError(code, text) };
}
