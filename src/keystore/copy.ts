import { isDeepStrictEqual } from 'node:util';
import type { StoreBackend, StoredObject } from './backend.js';
import { attemptsOn, forEachBounded, type CallSignal, type RunOptions } from './run.js';
import { KeyRecordSchema, type KeyRecord, type VersionRecord } from './types.js';
import { checkRecord, UNLISTED_PROBLEM, unlistedObjects } from './verify.js';
import type { StoreLocation } from './url.js';

/** Totals of a copy. `copied` counts records created and records replaced (`force`). */
export interface CopySummary {
  readonly copied: number;
  readonly unchanged: number;
  readonly refused: number;
  readonly failed: number;
}

/** What happened to one record that needs a line of its own. */
export type CopyEvent =
  | { readonly kind: 'replaced'; readonly id: string; readonly difference: string }
  | { readonly kind: 'refused'; readonly id: string; readonly difference: string }
  | { readonly kind: 'failed'; readonly id: string; readonly problem: string };

export interface CopyOptions extends RunOptions {
  /** Only ids starting with this. @default '' */
  readonly prefix?: string;
  /** Replace destination records that differ (compare-and-swap on the revision read). @default false */
  readonly force?: boolean;
  /** Where the source reads from, to report records its listing cannot name (see `unlistedObjects`). */
  readonly sourceLocation?: StoreLocation;
  readonly onEvent: (event: CopyEvent) => void;
  /** After each record, with the totals so far. */
  readonly onProgress?: (summary: CopySummary) => void;
}

/**
 * Copies every record of `source` (opened read-only) to `destination`, idempotently:
 *
 * - a source record that fails `checkRecord` is reported and not copied (`failed`);
 * - a destination record with the same content (bytes, or the same parsed JSON) is left alone (`unchanged`);
 * - a missing one is written create-only, so a record someone creates meanwhile is never overwritten;
 * - a different one is `refused`, unless `force`, which replaces it only if it is still the revision read;
 * - a write that loses such a race is reported (`failed`), never retried blindly: run again to compare anew;
 * - every write is read back and compared byte for byte.
 *
 * The source's bytes are written as they are, so a copy is byte-identical to its source.
 * A listing that fails, or too many store calls failing in a row, throws after the calls under
 * way settle; what was done so far stays done, and a second run carries on from there.
 */
export async function copyStore(source: StoreBackend, destination: StoreBackend, options: CopyOptions): Promise<CopySummary> {
  const prefix = options.prefix ?? '';
  const totals = { copied: 0, unchanged: 0, refused: 0, failed: 0 };
  const fail = (id: string, problem: string) => {
    totals.failed++;
    options.onEvent({ kind: 'failed', id, problem });
  };
  const attempt = attemptsOn([source, destination], options, fail);

  const copyOne = async (id: string, call: CallSignal): Promise<void> => {
    const read = await attempt(id, source, 'reading the source', () => source.read(id, call()));
    if (read === undefined) return;
    if (read.value === undefined) return fail(id, 'vanished from the source during the copy; not copied');
    const body = read.value.body;
    const check = checkRecord(id, body);
    if (!check.ok) return fail(id, `invalid in the source, not copied: ${check.problems.join('; ')}`);

    const current = await attempt(id, destination, 'reading the destination', () => destination.read(id, call()));
    if (current === undefined) return;
    let expected: string | null = null;
    let difference = '';
    if (current.value !== undefined) {
      if (sameContent(body, current.value)) {
        totals.unchanged++;
        return;
      }
      difference = describeDifference(check.record, current.value.body);
      if (!options.force) {
        totals.refused++;
        options.onEvent({ kind: 'refused', id, difference });
        return;
      }
      expected = current.value.revision;
    }

    const written = await attempt(id, destination, 'writing the destination', () => destination.write(id, body, expected, call()));
    if (written === undefined) return;
    if (!written.value.ok) {
      return fail(
        id,
        expected === null
          ? 'someone else created it in the destination meanwhile; left as it is (run again to compare)'
          : 'changed in the destination since it was read; not replaced (run again to compare)',
      );
    }
    const back = await attempt(id, destination, 'reading back the copy', () => destination.read(id, call()));
    if (back === undefined) return;
    if (back.value === undefined || !back.value.body.equals(body)) {
      return fail(id, 'the copy read back differs from the source (changed by someone else since, or altered by the store)');
    }
    totals.copied++;
    if (expected !== null) options.onEvent({ kind: 'replaced', id, difference });
  };

  await forEachBounded(source.list(prefix, options.signal ?? new AbortController().signal), options, async ({ id }, call) => {
    await copyOne(id, call);
    options.onProgress?.({ ...totals });
  });
  if (options.sourceLocation !== undefined) {
    for (const name of await unlistedObjects(options.sourceLocation, prefix)) fail(name, `not copied: ${UNLISTED_PROBLEM}`);
  }
  return { ...totals };
}

/** Same bytes, or the same JSON written another way (key order, spacing). */
function sameContent(body: Buffer, other: StoredObject): boolean {
  if (body.equals(other.body)) return true;
  try {
    return isDeepStrictEqual(JSON.parse(body.toString('utf8')), JSON.parse(other.body.toString('utf8')));
  } catch {
    return false;
  }
}

/**
 * How the destination's record differs from the source's, in terms an operator can weigh
 * before `--force` (which would lose versions only the destination has, or bring back a DEK
 * the destination destroyed). Names versions and fields, never a wrapped DEK.
 */
export function describeDifference(source: KeyRecord, destinationBody: Buffer): string {
  let dest: KeyRecord;
  try {
    const parsed = KeyRecordSchema.safeParse(JSON.parse(destinationBody.toString('utf8')));
    if (!parsed.success) return 'the destination holds something that is not a valid key record';
    dest = parsed.data;
  } catch {
    return 'the destination holds something that is not valid JSON';
  }
  const versions = (r: KeyRecord) => new Map(r.versions.map((v) => [v.version, v]));
  const src = versions(source);
  const dst = versions(dest);
  const list = (pick: (v: number) => boolean, from: Map<number, VersionRecord>) => [...from.keys()].filter(pick).join(', ');
  const parts: string[] = [];
  const add = (what: string, numbers: string) => void (numbers !== '' && parts.push(`${what} ${numbers}`));
  if (dest.id !== source.id) parts.push(`the destination holds key id ${JSON.stringify(dest.id)}`);
  add(
    'versions only in the destination:',
    list((n) => !src.has(n), dst),
  );
  add(
    'versions only in the source:',
    list((n) => !dst.has(n), src),
  );
  const both = (n: number) => src.has(n) && dst.has(n);
  const state = (m: Map<number, VersionRecord>, n: number) => m.get(n)?.state;
  add(
    'destroyed in the destination, enabled in the source:',
    list((n) => both(n) && state(dst, n) === 'destroyed' && state(src, n) === 'enabled', dst),
  );
  add(
    'destroyed in the source, enabled in the destination:',
    list((n) => both(n) && state(src, n) === 'destroyed' && state(dst, n) === 'enabled', dst),
  );
  add(
    'wrapped differently (another KEK, or rewrapped):',
    list((n) => {
      const [a, b] = [src.get(n), dst.get(n)];
      return a !== undefined && b !== undefined && a.state === b.state && JSON.stringify(a.wraps) !== JSON.stringify(b.wraps);
    }, dst),
  );
  if (parts.length === 0) parts.push('other fields differ (created times, encryption counts)');
  return parts.join('; ');
}
