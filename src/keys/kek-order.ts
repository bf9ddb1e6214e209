import { LRUCache } from 'lru-cache';
import { Cancelled } from '../../adapters/guard.js';
import type { ErrorCode } from '../protocol/errors.js';
import { GatewayError } from '../protocol/errors.js';
import { globToRegExp, matchesAny } from '../policy/glob.js';

/** `kms.revocation`: what a denial of one KEK of a multi-KEK version does (docs/security.md). */
export const REVOCATION_MODES = ['any', 'all'] as const;
export type RevocationMode = (typeof REVOCATION_MODES)[number];

/**
 * Orders KEK URIs by `kms.preference`: those matching the first glob first, and so on; the
 * rest after, each group in the order given (the order the version lists them).
 */
export function preferenceOrder(globs: readonly string[]): (keks: readonly string[]) => string[] {
  const patterns = globs.map(globToRegExp);
  const rank = (kek: string): number => {
    const i = patterns.findIndex((re) => re.test(kek));
    return i === -1 ? patterns.length : i;
  };
  return (keks) => (patterns.length === 0 ? [...keks] : [...keks].sort((a, b) => rank(a) - rank(b)));
}

/** `keys.defaultKek` as a list: one URI, a comma-separated list (as in the protocol), or an array. */
export function defaultKeks(value: string | readonly string[]): string[] {
  return typeof value === 'string' ? value.split(',') : [...value];
}

/** The configured KEK allow-list as a test (`keys.allowedKeks`, else just the default KEKs). */
export function kekAllowList(options: {
  readonly allowedKeks?: readonly string[] | undefined;
  readonly defaultKek: string | readonly string[];
}): (kek: string) => boolean {
  return matchesAny(options.allowedKeks ?? defaultKeks(options.defaultKek));
}

/** How the last unwrap of one version under one KEK ended, for INFO. */
export interface LastUnwrap {
  readonly result: 'ok' | ErrorCode;
  /** ISO time. */
  readonly at: string;
}

/** The last unwrap of each (key version, KEK) this gateway made; bounded, metadata only. */
export class UnwrapLedger {
  private readonly last: LRUCache<string, Map<string, LastUnwrap>>;

  constructor(
    max: number,
    private readonly now: () => number = Date.now,
  ) {
    this.last = new LRUCache({ max: Math.max(1, max) });
  }

  /** Records an unwrap's end: `err` undefined for success. A cancelled call tells nothing. */
  record(keyId: string, version: number, kek: string, err: unknown): void {
    if (err instanceof Cancelled) return;
    const result = err === undefined ? 'ok' : err instanceof GatewayError ? err.code : 'INTERNAL';
    const key = `${keyId}@${version}`;
    const byKek = this.last.get(key) ?? new Map<string, LastUnwrap>();
    byKek.set(kek, { result, at: new Date(this.now()).toISOString() });
    this.last.set(key, byKek);
  }

  get(keyId: string, version: number, kek: string): LastUnwrap | undefined {
    return this.last.get(`${keyId}@${version}`)?.get(kek);
  }
}
