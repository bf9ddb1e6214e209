import type { Clock } from '../../src/cache/dek-cache.js';

/** A clock that moves only when told: DEK TTLs, stale-if-error and breaker windows pass without sleeping. */
export interface ManualClock extends Clock {
  advance(ms: number): void;
}

export function manualClock(start = 1_000_000): ManualClock {
  let now = start;
  return { now: () => now, advance: (ms) => void (now += ms) };
}
