import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { StoreBackend, StoredObject } from './backend.js';
import { fileNameFor } from './file/index.js';
import { escapeId, idFromObjectName, OBJECT_SUFFIX } from './names.js';
import { DEFAULT_MAX_FAILURES_IN_A_ROW, describeStoreError, FailureStreak, forEachBounded, type RunOptions } from './run.js';
import { KeyRecordSchema, type KeyRecord } from './types.js';
import type { StoreLocation } from './url.js';

/** Bytes of a commitment tag: HMAC-SHA256 (src/crypto/commit.ts). */
export const COMMIT_BYTES = 32;

/** What one stored object says about itself: the record when it is sound, else what is wrong. */
export type RecordCheck = { readonly ok: true; readonly record: KeyRecord } | { readonly ok: false; readonly problems: readonly string[] };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Checks the bytes stored under `id`: UTF-8 JSON, a `KeyRecordSchema` record of that id,
 * version numbers strictly increasing, every enabled version with a wrapped DEK and a
 * 32-byte commitment tag in canonical base64, every destroyed one with neither. Problems
 * name fields and versions, never a value: a wrapped DEK is never copied into a message.
 */
export function checkRecord(id: string, body: Buffer): RecordCheck {
  let raw: unknown;
  try {
    raw = JSON.parse(utf8.decode(body));
  } catch {
    return { ok: false, problems: ['not valid UTF-8 JSON'] };
  }
  const parsed = KeyRecordSchema.safeParse(raw);
  if (!parsed.success) {
    return { ok: false, problems: parsed.error.issues.map((issue) => describeIssue(raw, issue.path, issue.message)) };
  }
  const record = parsed.data;
  const problems: string[] = [];
  if (record.id !== id) problems.push(`holds key id ${quoteId(record.id)}, which is stored under another name`);
  let previous = 0;
  for (const v of record.versions) {
    if (v.version <= previous) problems.push(`version numbers are not strictly increasing (${v.version} after ${previous})`);
    previous = Math.max(previous, v.version);
    const at = `version ${v.version}`;
    if (v.state === 'enabled') {
      if (v.wraps.length === 0) problems.push(`${at} is enabled but has no wrapped DEK`);
      for (const [i, w] of v.wraps.entries()) {
        if (!isCanonicalBase64(w.wrapped)) problems.push(`${at}: wraps[${i}].wrapped is not valid base64`);
      }
      if (new Set(v.wraps.map((w) => w.kek)).size !== v.wraps.length) problems.push(`${at} lists a KEK twice`);
      if (v.commit === null) problems.push(`${at} is enabled but has no commitment tag (commit)`);
      else if (!isCanonicalBase64(v.commit)) problems.push(`${at}: commit is not valid base64`);
      else if (Buffer.byteLength(v.commit, 'base64') !== COMMIT_BYTES) {
        problems.push(`${at}: commit is ${Buffer.byteLength(v.commit, 'base64')} bytes, not ${COMMIT_BYTES} (HMAC-SHA256)`);
      }
    } else {
      if (v.wraps.length > 0) problems.push(`${at} is destroyed but still holds a wrapped DEK`);
      if (v.recovery !== undefined) problems.push(`${at} is destroyed but still holds a recovery copy`);
      if (v.commit !== null) problems.push(`${at} is destroyed but still holds a commitment tag`);
    }
  }
  return problems.length === 0 ? { ok: true, record } : { ok: false, problems };
}

/** A problem found in a store: the key id (or, for an object no id names, its object name) and what is wrong. */
export interface StoreProblem {
  readonly id: string;
  readonly problem: string;
}

/** Totals of a verification. */
export interface VerifySummary {
  readonly records: number;
  readonly problems: number;
}

export interface VerifyOptions extends RunOptions {
  /** Only ids starting with this. @default '' */
  readonly prefix?: string;
  /** Where the backend reads from, to find objects its listing cannot name (see `unlistedObjects`). */
  readonly location?: StoreLocation;
  readonly onProblem: (problem: StoreProblem) => void;
  /** After each record, with the totals so far. */
  readonly onProgress?: (summary: VerifySummary) => void;
}

/**
 * Reads and checks every record of a store (opened read-only: a live gateway's store can be
 * verified). A record that cannot be read is a problem too; a store that cannot be listed
 * throws its `StoreError`.
 */
export async function verifyStore(backend: StoreBackend, options: VerifyOptions): Promise<VerifySummary> {
  const prefix = options.prefix ?? '';
  const streak = new FailureStreak(options.maxFailuresInARow ?? DEFAULT_MAX_FAILURES_IN_A_ROW);
  let records = 0;
  let problems = 0;
  const report = (id: string, problem: string) => {
    problems++;
    options.onProblem({ id, problem });
  };
  const listed = backend.list(prefix, options.signal ?? new AbortController().signal);
  await forEachBounded(listed, options, async ({ id }, call) => {
    let stored: StoredObject | undefined;
    try {
      stored = await backend.read(id, call());
      streak.ok();
    } catch (err) {
      if (options.signal?.aborted) throw err;
      records++;
      report(id, `could not be read: ${describeStoreError(err)}`);
      streak.failed(describeStoreError(err));
      return;
    }
    if (stored === undefined) return; // listed, then gone: nothing left to verify
    records++;
    const check = checkRecord(id, stored.body);
    if (!check.ok) for (const p of check.problems) report(id, p);
    options.onProgress?.({ records, problems });
  });
  if (options.location !== undefined) {
    for (const name of await unlistedObjects(options.location, prefix)) {
      records++;
      report(name, UNLISTED_PROBLEM);
    }
  }
  return { records, problems };
}

/** What `unlistedObjects` names are. */
export const UNLISTED_PROBLEM = 'is not a key record of the id its name says (damaged, or written under the wrong name)';

/**
 * Objects in the store's place that look like records but that its listing cannot name.
 * A folder store keeps a long id's record under a hashed file name and learns the id from the
 * record itself, so a damaged one is invisible to `list()`; this finds it. Object-store
 * listings name every record by its object name, so there are none to add there.
 */
export async function unlistedObjects(location: StoreLocation, prefix: string): Promise<string[]> {
  if (location.kind !== 'file') return [];
  const escaped = escapeId(prefix);
  const names = (await readdir(location.dir)).filter((n) => n.endsWith(OBJECT_SUFFIX)).sort();
  const out: string[] = [];
  for (const name of names) {
    const hashed = name.includes('~');
    if (!name.startsWith(hashed ? escaped.slice(0, 64) : escaped)) continue;
    const id = hashed ? await idInFile(join(location.dir, name)) : idFromObjectName('', name);
    // A sound name, listed or written since the listing, is checked (or not in scope) elsewhere.
    if (id === undefined || fileNameFor(id) !== name) out.push(name);
  }
  return out;
}

async function idInFile(path: string): Promise<string | undefined> {
  try {
    const id = (JSON.parse(await readFile(path, 'utf8')) as { id?: unknown }).id;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined;
  }
}

/** Standard base64 with padding, exactly as Buffer writes it (so its decoded size is exact). */
function isCanonicalBase64(text: string): boolean {
  return text.length % 4 === 0 && Buffer.from(text, 'base64').toString('base64') === text;
}

/** `version 2: commit is missing`, from a schema issue, without the offending value. */
function describeIssue(raw: unknown, path: readonly PropertyKey[], message: string): string {
  let node: unknown = raw;
  for (const key of path) node = node !== null && typeof node === 'object' ? (node as Record<PropertyKey, unknown>)[key] : undefined;
  const what = node === undefined ? 'is missing' : message;
  if (path[0] === 'versions' && typeof path[1] === 'number') {
    const entry = (raw as { versions: unknown[] }).versions[path[1]] as { version?: unknown } | null | undefined;
    const n = typeof entry?.version === 'number' ? `version ${entry.version}` : `versions[${path[1]}]`;
    const field = path.slice(2).map(String).join('.');
    return field === '' ? `${n}: ${what}` : `${n}: ${field} ${what}`;
  }
  return path.length === 0 ? `not a key record: ${message}` : `${path.map(String).join('.')} ${what}`;
}

/**
 * An id (or object name) as printed: bare when made of key-id and object-name characters, else
 * JSON-quoted, so a damaged record's id cannot break a report's lines.
 */
export function quoteId(id: string): string {
  return /^[A-Za-z0-9._\-/:~%]{1,1024}$/.test(id) ? id : JSON.stringify(id);
}
