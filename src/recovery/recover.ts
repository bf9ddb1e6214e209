import { randomFillSync } from 'node:crypto';
import type { AdapterRegistry } from '../../adapters/registry.js';
import { verifyCommitTag } from '../crypto/commit.js';
import { allocSecret, zeroize } from '../crypto/secret.js';
import type { StoreBackend } from '../keystore/backend.js';
import { serialize } from '../keystore/key-store.js';
import { attemptsOn, describeStoreError, forEachBounded, type CallSignal, type RunOptions } from '../keystore/run.js';
import { KeyRecordSchema, type KeyRecord, type VersionRecord, type Wrap } from '../keystore/types.js';
import { GatewayError } from '../protocol/errors.js';
import { openRecovery } from './age.js';

/** Totals of a recovery. Version counts are of records written. */
export interface RecoverSummary {
  /** Records written to the destination. */
  readonly records: number;
  /** Enabled versions rebuilt from their recovery copy and wrapped under the new KEK. */
  readonly recovered: number;
  /** Enabled versions that could not be rebuilt: written with their old wraps (see the `kept` events). */
  readonly kept: number;
  /** Destroyed versions, copied as they are. */
  readonly destroyed: number;
  /** Records already in the destination: left alone (recovery writes create-only). */
  readonly refused: number;
  /** Records not written (unreadable, invalid, or the new KEK failed). */
  readonly failed: number;
}

/** What happened to one record or version that needs a line of its own. Never holds key material. */
export type RecoverEvent =
  | { readonly kind: 'kept'; readonly id: string; readonly version: number; readonly reason: string; readonly keks: readonly string[] }
  | { readonly kind: 'refused'; readonly id: string }
  | { readonly kind: 'failed'; readonly id: string; readonly problem: string };

export interface RecoverOptions extends RunOptions {
  /** age identities (`AGE-SECRET-KEY-1…`) that open the recovery copies; any one may match. */
  readonly identities: readonly string[];
  /** KEK URI every rebuilt DEK is wrapped under in the destination; the only KEK used. */
  readonly kek: string;
  /** Serves `kek`; no other KEK is asked for. */
  readonly adapters: Pick<AdapterRegistry, 'use'>;
  /** Only these ids (each must be in the source). @default every id in the source */
  readonly ids?: readonly string[];
  readonly onEvent: (event: RecoverEvent) => void;
  /** After each record, with the totals so far. */
  readonly onProgress?: (summary: RecoverSummary) => void;
}

/** Fewer records at once than `store copy`: each enabled version costs two calls on the new KEK. */
export const DEFAULT_RECOVER_CONCURRENCY = 8;

/** Why a version could not be rebuilt: it is written with the wraps it had. */
class NotRecovered extends Error {
  override readonly name = 'NotRecovered';
}

/**
 * Rebuilds every record of `source` (opened read-only) into `destination` with no KMS but
 * `options.kek`: each enabled version's DEK comes from its age recovery copy, is checked
 * against the version's commitment tag, wrapped under `kek`, unwrapped again and checked, and
 * written as that one wrap plus the recovery copy. A version that cannot be rebuilt (no
 * copy, another identity's, a tag mismatch) keeps its old wraps and is reported as `kept`;
 * destroyed versions are copied as they are. Writes are create-only and read back.
 *
 * Checks `kek` first with a throwaway DEK, so a wrong or denied KEK fails at once. A listing
 * failure, or too many store or KEK calls failing in a row, throws after the calls under way
 * settle; records written stay written, and a second run skips them (`refused`).
 */
export async function recoverStore(source: StoreBackend, destination: StoreBackend, options: RecoverOptions): Promise<RecoverSummary> {
  await checkKek(options);
  const totals = { records: 0, recovered: 0, kept: 0, destroyed: 0, refused: 0, failed: 0 };
  const fail = (id: string, problem: string) => {
    totals.failed++;
    options.onEvent({ kind: 'failed', id, problem });
  };
  // The KEK's failures are counted apart from the stores'; its errors keep their code.
  const attempt = attemptsOn([source, destination, options.adapters], options, fail, (err) =>
    err instanceof GatewayError ? `${err.code} ${err.message}` : describeStoreError(err),
  );

  const recoverOne = async (id: string, call: CallSignal): Promise<void> => {
    const read = await attempt(id, source, 'reading the source', () => source.read(id, call()));
    if (read === undefined) return;
    if (read.value === undefined) return fail(id, 'not in the source store');
    const record = parseRecord(id, read.value.body);
    if (typeof record === 'string') return fail(id, `invalid in the source, not recovered: ${record}`);

    // Before any KEK call: a record already recovered costs nothing on a second run.
    const existing = await attempt(id, destination, 'reading the destination', () => destination.read(id, call()));
    if (existing === undefined) return;
    if (existing.value !== undefined) {
      totals.refused++;
      return options.onEvent({ kind: 'refused', id });
    }

    const kept: RecoverEvent[] = [];
    const counts = { recovered: 0, destroyed: 0 };
    const versions: VersionRecord[] = [];
    for (const v of record.versions) {
      if (v.state === 'destroyed') {
        counts.destroyed++;
        versions.push(v);
        continue;
      }
      const dek = await rebuild(id, v, options.identities).catch((err: unknown) => {
        if (err instanceof NotRecovered) return err;
        throw err;
      });
      if (dek instanceof NotRecovered) {
        kept.push({ kind: 'kept', id, version: v.version, reason: dek.message, keks: v.wraps.map((w) => w.kek) });
        versions.push(v);
        continue;
      }
      try {
        const wrap = await attempt(id, options.adapters, `wrapping version ${v.version} under ${options.kek}`, () =>
          wrapAndCheck(options, id, v, dek),
        );
        if (wrap === undefined) return;
        const { pending: _pending, ...rest } = v;
        versions.push({ ...rest, wraps: [wrap.value] });
        counts.recovered++;
      } finally {
        zeroize(dek);
      }
    }

    let body: Buffer;
    try {
      body = serialize(id, { ...record, versions });
    } catch {
      return fail(id, 'the rebuilt record does not validate; not written');
    }
    const written = await attempt(id, destination, 'writing the destination', () => destination.write(id, body, null, call()));
    if (written === undefined) return;
    if (!written.value.ok) {
      totals.refused++;
      return options.onEvent({ kind: 'refused', id });
    }
    const back = await attempt(id, destination, 'reading back the destination', () => destination.read(id, call()));
    if (back === undefined) return;
    if (back.value === undefined || !back.value.body.equals(body)) return fail(id, 'the record read back from the destination differs');
    totals.records++;
    totals.recovered += counts.recovered;
    totals.destroyed += counts.destroyed;
    totals.kept += kept.length;
    for (const event of kept) options.onEvent(event);
  };

  const run = { ...options, concurrency: options.concurrency ?? DEFAULT_RECOVER_CONCURRENCY };
  const ids = options.ids === undefined ? listIds(source, options.signal) : [...new Set(options.ids)];
  await forEachBounded(ids, run, async (id, call) => {
    await recoverOne(id, call);
    options.onProgress?.({ ...totals });
  });
  return { ...totals };
}

/** Wraps and unwraps a throwaway DEK under `kek`: a wrong, missing or denied KEK stops the run before any record. */
async function checkKek(options: RecoverOptions): Promise<void> {
  const probe = randomFillSync(allocSecret());
  const ctx = { keyId: 'kmsgw-recover-check', version: 1 };
  let back: Buffer | undefined;
  try {
    back = await options.adapters.use(options.kek, async (w) => w.unwrap(await w.wrap(probe, ctx), ctx));
    if (!back.equals(probe)) throw new GatewayError('DECRYPT_FAILED', 'the KEK did not give back what it wrapped');
  } catch (err) {
    const what = err instanceof GatewayError ? `${err.code} ${err.message}` : (err as Error).message;
    throw new Error(`--kek ${options.kek} cannot wrap and unwrap: ${what}`, { cause: err });
  } finally {
    zeroize(probe, back);
  }
}

/** The DEK of an enabled version from its recovery copy, checked against its commitment tag. */
async function rebuild(id: string, v: VersionRecord, identities: readonly string[]): Promise<Buffer> {
  if (v.recovery === undefined) throw new NotRecovered('no recovery copy');
  if (v.commit === null) throw new NotRecovered('no commitment tag to check the recovery copy against');
  let dek: Buffer;
  try {
    dek = await openRecovery(v.recovery.sealed, identities);
  } catch (err) {
    if (err instanceof GatewayError && err.code === 'DECRYPT_FAILED') throw new NotRecovered(err.message);
    throw err;
  }
  if (!verifyCommitTag(dek, id, v.version, Buffer.from(v.commit, 'base64'))) {
    zeroize(dek);
    throw new NotRecovered('the recovery copy does not match the commitment tag');
  }
  return dek;
}

/** Wraps `dek` under the new KEK, then unwraps that wrap and checks it against the tag before it is written. */
async function wrapAndCheck(options: RecoverOptions, id: string, v: VersionRecord, dek: Buffer): Promise<Wrap> {
  const ctx = { keyId: id, version: v.version };
  return options.adapters.use(options.kek, async (w) => {
    const wrapped = await w.wrap(dek, ctx);
    const back = await w.unwrap(wrapped, ctx);
    try {
      if (!verifyCommitTag(back, id, v.version, Buffer.from(v.commit as string, 'base64'))) {
        throw new GatewayError('DECRYPT_FAILED', 'the new wrap does not unwrap to the recovered DEK');
      }
    } finally {
      zeroize(back);
    }
    return {
      kek: options.kek,
      ...(wrapped.kekVersion === undefined ? {} : { kekVersion: wrapped.kekVersion }),
      wrapped: wrapped.blob.toString('base64'),
    };
  });
}

/** A stored record of `id` (format 1 is read as format 2), or what is wrong with it. */
function parseRecord(id: string, body: Buffer): KeyRecord | string {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch {
    return 'not valid JSON';
  }
  const parsed = KeyRecordSchema.safeParse(raw);
  // Paths and messages only: zod's issues never quote values here, and no wrapped DEK is printed.
  if (!parsed.success) return parsed.error.issues.map((i) => `${i.path.join('.') || 'record'}: ${i.message}`).join('; ');
  if (parsed.data.id !== id) return 'holds another key id';
  return parsed.data;
}

async function* listIds(source: StoreBackend, signal: AbortSignal | undefined): AsyncIterable<string> {
  for await (const { id } of source.list('', signal ?? new AbortController().signal)) yield id;
}
