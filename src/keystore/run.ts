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

/** A failed store call in one line: a `StoreError`'s safe message, or what went wrong locally. */
export function describeStoreError(err: unknown): string {
  if (err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError')) return 'store call timed out or was stopped';
  return err instanceof Error ? err.message : String(err);
}
