import fc from 'fast-check';

/**
 * One fixed seed for every property in test/security, so a failure replays exactly.
 * fast-check prints `{ seed, path }` in the failure message; to replay a failure run
 * `KMSGW_FC_SEED=<seed> npx vitest run test/security` (and pass `path` to narrow it down).
 * Override the seed to explore other cases: `KMSGW_FC_SEED=$RANDOM npx vitest run test/security`.
 */
export const SEED = Number(process.env.KMSGW_FC_SEED ?? 20261127);

/** fast-check parameters: the fixed seed, `numRuns` runs, and the seed repeated in the error text. */
export function params<T>(numRuns: number, extra: fc.Parameters<T> = {}): fc.Parameters<T> {
  return { seed: SEED, numRuns, ...extra };
}

/** Runs a property with the fixed seed; on failure the thrown error names the seed (and fast-check adds the path). */
export function check<Ts extends [unknown, ...unknown[]]>(prop: fc.IProperty<Ts>, numRuns: number): void {
  try {
    fc.assert(prop, params(numRuns));
  } catch (err) {
    throw new Error(`property failed (replay with KMSGW_FC_SEED=${SEED}):\n${(err as Error).message}`, { cause: err });
  }
}

export async function checkAsync<Ts extends [unknown, ...unknown[]]>(prop: fc.IAsyncProperty<Ts>, numRuns: number): Promise<void> {
  try {
    await fc.assert(prop, params(numRuns));
  } catch (err) {
    throw new Error(`property failed (replay with KMSGW_FC_SEED=${SEED}):\n${(err as Error).message}`, { cause: err });
  }
}
