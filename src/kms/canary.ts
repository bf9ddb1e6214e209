import { randomFillSync, timingSafeEqual } from 'node:crypto';
import type { KekHealth, KekStatus } from '../../adapters/health.js';
import type { AdapterRegistry } from '../../adapters/registry.js';
import { withSecrets } from '../crypto/secret.js';
import type { Logger } from '../log/logger.js';
import { GatewayError, toGatewayError } from '../protocol/errors.js';

/** The wrap context of every canary call; nothing is ever stored under it. */
export const CANARY_CONTEXT = { keyId: '.kmsgw-canary', version: 1 } as const;

/** What the canary checks and how often. */
export interface CanaryOptions {
  /** Period in ms; 0: never on a timer (`runOnce` still works). */
  readonly intervalMs: number;
  /** The KEKs in use now: checked each round. */
  readonly targets: () => Iterable<string>;
  readonly adapters: Pick<AdapterRegistry, 'use'>;
  readonly health: KekHealth;
  readonly log: Logger;
}

/**
 * Proves each KEK in use usable in the background, not per probe: a wrap and an unwrap of a
 * random value under it, through the guarded adapter, so the result lands in `KekHealth` like a
 * request's would. A KEK disabled in the KMS is thus seen denied (and its DEKs zeroized) within
 * one interval even with no traffic, and readiness reflects the KMS without calling it per probe.
 */
export class Canary {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private rounds = 0;

  constructor(private readonly options: CanaryOptions) {}

  /** Runs a round now, then one every interval. */
  start(): void {
    void this.runOnce();
    if (this.options.intervalMs > 0 && this.timer === undefined) {
      this.timer = setInterval(() => void this.runOnce(), this.options.intervalMs);
      this.timer.unref();
    }
  }

  /** Rounds finished so far. */
  get completed(): number {
    return this.rounds;
  }

  /** One round over every KEK in use; a round already running is joined, not doubled. */
  runOnce(): Promise<void> {
    this.running ??= this.round().finally(() => {
      this.running = undefined;
      this.rounds++;
    });
    return this.running;
  }

  stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    return this.running ?? Promise.resolve();
  }

  private async round(): Promise<void> {
    const keks = [...new Set(this.options.targets())];
    await Promise.all(keks.map((kek) => this.check(kek)));
  }

  private async check(kek: string): Promise<void> {
    const before = this.options.health.status(kek).state;
    try {
      await this.options.adapters.use(kek, (wrapper) =>
        withSecrets(async (scope) => {
          const value = randomFillSync(scope.alloc());
          const wrapped = await wrapper.wrap(value, CANARY_CONTEXT);
          const back = scope.track(await wrapper.unwrap(wrapped, CANARY_CONTEXT));
          if (!timingSafeEqual(back, value)) throw new GatewayError('INTERNAL', 'canary value came back changed');
        }),
      );
      if (before !== 'ok') this.options.log.info({ kek }, 'KEK canary passed');
    } catch (err) {
      const code = toGatewayError(err).code;
      // The guard has told KekHealth already; the log says it once per change, not every round.
      if (this.options.health.status(kek).state !== before || before === 'unknown') {
        this.options.log.warn({ kek, code }, 'KEK canary failed');
      }
    }
  }
}

/** Where the KEKs in use are learned. */
export interface InUseSources {
  readonly defaultKeks: readonly string[];
  /** The KEKs of the DEKs held in the cache (stale ones included). */
  readonly cached: () => Iterable<string>;
  readonly health: KekHealth;
  /** A KEK a call told anything about within this many ms counts as in use. */
  readonly recentMs: number;
  readonly now: () => number;
}

/**
 * The KEKs in use: the default KEKs, those of cached DEKs, and those any call used recently
 * (a denied KEK that clients keep asking for stays in use, and keeps readiness red). KEKs
 * nothing uses any more are forgotten, so `KekHealth` stays bounded.
 */
export function keksInUse(sources: InUseSources): KekStatus[] {
  const keep = new Set<string>([...sources.defaultKeks, ...sources.cached()]);
  const since = sources.now() - sources.recentMs;
  const out: KekStatus[] = [];
  for (const status of sources.health.statuses()) {
    if (keep.delete(status.kek) || (status.checkedAt ?? status.since) >= since) out.push(status);
    else sources.health.forget(status.kek);
  }
  // What is left in use has no record yet: reported `unknown`.
  for (const kek of keep) out.push(sources.health.status(kek));
  return out;
}
