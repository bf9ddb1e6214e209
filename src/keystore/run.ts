/** How a store-wide run (verify, copy) goes through the records. */
export interface RunOptions {
  /** Records handled at once. @default 16 */
  readonly concurrency?: number;
  /** Longest wait for one store call, in ms. @default 30000 */
  readonly callTimeoutMs?: number;
  /** Stops the run: calls under way are aborted, no new record is started. */
  readonly signal?: AbortSignal;
  /**
   * Store calls that may fail in a row (no call succeeding between) before the run gives up:
   * an unreachable store fails every record, and should not print thousands of lines doing so.
   * @default 20
   */
  readonly maxFailuresInARow?: number;
}

export const DEFAULT_CONCURRENCY = 16;
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_FAILURES_IN_A_ROW = 20;

/** The signal of one store call: the run's, and the call's own deadline. */
export type CallSignal = () => AbortSignal;

/**
 * Runs `fn` on each item, at most `concurrency` at a time, reading `items` only as fast as
 * they are handled (a listing of millions of ids is never held whole). `fn` reports its own
 * per-record failures; what it throws ends the run, after the calls under way settle.
 */
export async function forEachBounded<T>(
  items: AsyncIterable<T> | Iterable<T>,
  options: RunOptions,
  fn: (item: T, call: CallSignal) => Promise<void>,
): Promise<void> {
  const limit = options.concurrency ?? DEFAULT_CONCURRENCY;
  const timeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const call: CallSignal = () =>
    options.signal === undefined ? AbortSignal.timeout(timeoutMs) : AbortSignal.any([options.signal, AbortSignal.timeout(timeoutMs)]);
  const running = new Set<Promise<void>>();
  let failure: { readonly error: unknown } | undefined;
  try {
    for await (const item of items) {
      if (failure !== undefined) break;
      options.signal?.throwIfAborted();
      const task: Promise<void> = fn(item, call)
        .catch((error: unknown) => void (failure ??= { error }))
        .finally(() => running.delete(task));
      running.add(task);
      if (running.size >= limit) await Promise.race(running);
    }
  } finally {
    await Promise.allSettled(running);
  }
  if (failure !== undefined) throw failure.error;
}

/** Counts store calls failing in a row; the run gives up past the limit. */
export class FailureStreak {
  private inARow = 0;

  constructor(private readonly limit: number) {}

  ok(): void {
    this.inARow = 0;
  }

  /** Counts a failed call; throws (ending the run) once too many failed in a row. */
  failed(message: string): void {
    if (++this.inARow >= this.limit) throw new Error(`giving up after ${this.inARow} store calls failed in a row; the last: ${message}`);
  }
}

/** One call of a run, on one target (a store, a KEK): its value, or undefined once its failure was reported. */
export type Attempt = <T>(id: string, target: unknown, what: string, run: () => Promise<T>) => Promise<{ value: T } | undefined>;

/**
 * Calls of a run, each counted against its own target's failure streak (a healthy source must not
 * hide a destination that fails every call): a failure is the record's, reported through `fail`
 * as `<what> failed: <description>`, and the run gives up once one target failed too often in a row.
 */
export function attemptsOn(
  targets: readonly unknown[],
  options: RunOptions,
  fail: (id: string, problem: string) => void,
  describe: (err: unknown) => string = describeStoreError,
): Attempt {
  const limit = options.maxFailuresInARow ?? DEFAULT_MAX_FAILURES_IN_A_ROW;
  const streaks = new Map(targets.map((t) => [t, new FailureStreak(limit)]));
  return async (id, target, what, run) => {
    const streak = streaks.get(target) as FailureStreak;
    try {
      const value = await run();
      streak.ok();
      return { value };
    } catch (err) {
      if (options.signal?.aborted) throw err;
      const message = describe(err);
      fail(id, `${what} failed: ${message}`);
      streak.failed(message);
      return undefined;
    }
  };
}

/** A failed store call in one line: a `StoreError`'s safe message, or what went wrong locally. */
export function describeStoreError(err: unknown): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'store call timed out or was stopped';
  return err instanceof Error ? err.message : String(err);
}
