import type { KeyStore } from '../keystore/key-store.js';
import { forEachBounded } from '../keystore/run.js';
import { newestEnabled } from '../keystore/types.js';
import type { Logger } from '../log/logger.js';
import { matchesAny } from '../policy/glob.js';
import { toGatewayError } from '../protocol/errors.js';
import type { DekService } from './dek-service.js';

/** Unwraps at once, at most. */
const WARM_CONCURRENCY = 8;

/** What a warm-up did, for the log and tests. */
export interface WarmResult {
  readonly warmed: number;
  /** Keys that could not be warmed, by error code. */
  readonly failed: Readonly<Record<string, number>>;
  readonly ms: number;
}

/**
 * Unwraps the current version of every key matching `globs` into the cache, at most `limit`
 * keys (more would only evict each other), `WARM_CONCURRENCY` at a time. Every failure (a KMS
 * down, a key without an enabled version, the store unreachable) is counted and tolerated:
 * warm-up makes the first requests fast, it never stops the gateway.
 */
export async function warmUp(
  globs: readonly string[],
  store: Pick<KeyStore, 'list' | 'get'>,
  deks: Pick<DekService, 'warm'>,
  limit: number,
  log: Logger,
): Promise<WarmResult> {
  const started = performance.now();
  const failed: Record<string, number> = {};
  const fail = (code: string) => (failed[code] = (failed[code] ?? 0) + 1);
  let warmed = 0;
  if (globs.length === 0) return { warmed, failed, ms: 0 };
  const matches = matchesAny(globs);
  const ids = new Set<string>();
  for (const prefix of new Set(globs.map(literalPrefix))) {
    try {
      for (const id of await store.list(prefix)) if (matches(id) && ids.size < limit) ids.add(id);
    } catch (err) {
      fail(toGatewayError(err).code);
    }
  }
  // fn reports each key's failure itself, so nothing ends the run early.
  await forEachBounded(ids, { concurrency: WARM_CONCURRENCY }, async (id) => {
    try {
      const record = await store.get(id);
      const current = record && newestEnabled(record);
      if (current === undefined) {
        fail('NOT_FOUND');
        return;
      }
      await deks.warm(id, current.version);
      warmed++;
    } catch (err) {
      fail(toGatewayError(err).code);
    }
  });
  const result = { warmed, failed, ms: Math.round(performance.now() - started) };
  const failures = Object.values(failed).reduce((a, b) => a + b, 0);
  if (failures > 0) log.warn({ globs, ...result }, 'cache warm-up finished with failures (the keys are unwrapped on first use instead)');
  else log.info({ globs, ...result }, 'cache warm-up finished');
  return result;
}

/** The part of a glob before its first wildcard: what to LIST. */
function literalPrefix(glob: string): string {
  const wild = glob.search(/[*?]/);
  return wild === -1 ? glob : glob.slice(0, wild);
}
