import { GatewayError } from '../src/protocol/errors.js';

/**
 * The KMS calls a gateway makes at once, across every KEK (`kms.maxConcurrent`): a burst of cold
 * keys queues here instead of tripping the cloud's request quotas (AWS, Cloud KMS and Key Vault
 * all throttle). A call that cannot start before its deadline is refused with `Saturated`.
 */
export class ConcurrencyLimit {
  private active = 0;
  /** Most calls that were in flight at once (the bench reports it). */
  peak = 0;
  private readonly waiting: Array<{ start: () => void }> = [];

  constructor(readonly max: number) {}

  /** Calls in flight now. */
  get inFlight(): number {
    return this.active;
  }

  /** Waits for a slot, at most `waitMs`; resolves with the function that gives it back (call it once). */
  async acquire(waitMs: number): Promise<() => void> {
    if (this.active >= this.max) {
      await new Promise<void>((start, refuse) => {
        const entry = { start: () => (clearTimeout(timer), start()) };
        const timer = setTimeout(
          () => {
            this.waiting.splice(this.waiting.indexOf(entry), 1);
            refuse(new Saturated(this.max));
          },
          Math.max(0, waitMs),
        );
        this.waiting.push(entry);
      });
    } else {
      this.active++;
    }
    this.peak = Math.max(this.peak, this.active);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      // The slot passes straight to the next waiter, so `active` never drops below a queue.
      const next = this.waiting.shift();
      if (next !== undefined) next.start();
      else this.active--;
    };
  }
}

/** Refused before reaching the KMS: too many calls in flight. Says nothing about the KMS, so no health or breaker sees it. */
export class Saturated extends GatewayError {
  constructor(max: number) {
    super('THROTTLED', `too many KMS calls in flight (kms.maxConcurrent ${max}); try again`);
  }
}
