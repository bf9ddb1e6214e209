import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { MAX_RECORD_LINE_BYTES, parseLine, ZERO_HASH, type ParsedLine } from './chain.js';

/** One line of an audit file as the verifier sees it. */
interface Line {
  /** 1-based line number. */
  readonly no: number;
  /** SHA-256 (hex) of the line's exact bytes, without its LF. */
  readonly hash: string;
  readonly bytes: number;
  readonly parsed: ParsedLine;
}

/** Where the log started a new chain segment after a torn last line (see docs/audit.md). */
export interface ChainRestart {
  /** Line of the `chain-restart` record. */
  readonly line: number;
  /** Line that was cut short, just before it. */
  readonly tornLine: number;
  readonly tornBytes: number;
}

/** The first line found altered, removed, inserted or reordered, and why. */
export interface VerifyProblem {
  readonly line: number;
  readonly reason: string;
}

/** Where a chain stands after a line: its `seq` and the SHA-256 of the line. */
export interface ChainPoint {
  readonly seq: number;
  readonly hash: string;
}

export interface VerifyOptions {
  /**
   * The file continues a chain (it was rotated out of a longer one, docs/audit.md "Rotation"):
   * its first line must follow this point (the previous file's `end`), or start a new chain
   * (64 zeros, seq 1), which `newChain` then reports.
   */
  readonly after?: ChainPoint;
}

export interface VerifyResult {
  /** True when every line is where the chain says it must be. */
  readonly ok: boolean;
  /** The last line, when ok and the file has one: what the next file's first line must follow. */
  readonly end?: ChainPoint;
  /** With `after`: true when the file starts a chain of its own instead of continuing it. */
  readonly newChain?: boolean;
  /** Lines read (all of them when ok; up to the lookahead past the problem otherwise). */
  readonly lines: number;
  /** Records verified (request records and chain-restart records), before any problem. */
  readonly records: number;
  readonly restarts: readonly ChainRestart[];
  readonly problem?: VerifyProblem;
}

/**
 * Splits a byte stream at LF. Each line is hashed whole, however long; only its
 * first MAX_RECORD_LINE_BYTES are kept for parsing (longer lines are never records),
 * so memory stays bounded whatever the input.
 */
async function* splitLines(input: AsyncIterable<Uint8Array>): AsyncGenerator<Line> {
  let no = 0;
  let hasher = createHash('sha256');
  let kept: Buffer[] = [];
  let keptBytes = 0;
  let bytes = 0;
  const finish = (): Line => {
    const tooLong = bytes > MAX_RECORD_LINE_BYTES;
    const line: Line = {
      no: ++no,
      hash: hasher.digest('hex'),
      bytes,
      parsed: tooLong ? { kind: 'not-json' } : parseLine(kept.length === 1 ? (kept[0] as Buffer) : Buffer.concat(kept, keptBytes)),
    };
    hasher = createHash('sha256');
    kept = [];
    keptBytes = 0;
    bytes = 0;
    return line;
  };
  for await (const chunk of input) {
    const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let start = 0;
    while (start <= buf.length) {
      const lf = buf.indexOf(0x0a, start);
      const end = lf === -1 ? buf.length : lf;
      if (end > start) {
        const piece = buf.subarray(start, end);
        hasher.update(piece);
        bytes += piece.length;
        if (keptBytes + piece.length <= MAX_RECORD_LINE_BYTES) {
          kept.push(Buffer.from(piece)); // a copy: the source may reuse its chunks
          keptBytes += piece.length;
        } else {
          kept = [];
          keptBytes = 0;
        }
      }
      if (lf === -1) break;
      yield finish();
      start = lf + 1;
    }
  }
  if (bytes > 0) yield finish(); // a last line without its LF
}

/**
 * Walks an audit log and reports the first line that is not where the hash chain
 * says it must be. Pure: reads `input` once, line by line, holding four lines at most.
 *
 * Every line must parse as a record whose `prev` is the SHA-256 of the line before it
 * (64 zeros on line 1) and whose `seq` is one more than the line before's. When a link
 * breaks, the lines around it tell which line moved (docs/audit.md, "How verify names
 * a line"). One exception: a line that is not JSON, directly followed by a
 * `chain-restart` record whose `prev` is that line's hash, is a torn write the log
 * acknowledged on its next start; it is reported in `restarts`, not as a problem.
 */
export async function verifyAuditLog(input: AsyncIterable<Uint8Array>, options: VerifyOptions = {}): Promise<VerifyResult> {
  const window: Line[] = []; // [line i-2, line i-1, line i, line i+1], the newest last
  const restarts: ChainRestart[] = [];
  const after = options.after;
  let lastSeq = after?.seq ?? 0;
  let newChain = false;
  let records = 0;
  let lines = 0;

  /** Checks `cur` given the two lines before it and the one after it (undefined at the end). */
  const check = (p2: Line | undefined, p1: Line | undefined, cur: Line, next: Line | undefined): VerifyProblem | undefined => {
    const here = cur.no;
    if (cur.parsed.kind === 'not-json') {
      if (next?.parsed.kind === 'record' && next.parsed.fields.event === 'chain-restart' && next.parsed.fields.prev === cur.hash) {
        restarts.push({ line: next.no, tornLine: here, tornBytes: cur.bytes });
        return undefined; // lastSeq stays: the restart record follows the last whole record
      }
      if (cur.bytes > MAX_RECORD_LINE_BYTES) return { line: here, reason: `${cur.bytes} bytes long: not an audit record` };
      return next
        ? { line: here, reason: 'not valid JSON' }
        : {
            line: here,
            reason:
              'not valid JSON: the last line was cut short (a torn write); the gateway starts a new chain segment after it when it next opens the file',
          };
    }
    if (cur.parsed.kind === 'not-record') return { line: here, reason: 'valid JSON but not an audit record (no seq or prev)' };
    const { seq, prev } = cur.parsed.fields;
    let expectedSeq = lastSeq + 1;
    if (p1 === undefined && after !== undefined && prev === ZERO_HASH && seq === 1) {
      newChain = true;
      expectedSeq = 1;
    } else if (p1 === undefined && after !== undefined) {
      if (prev !== after.hash) {
        return {
          line: here,
          reason: `prev does not match the last line of the file before (seq ${after.seq}): lines removed between the files, or not the next file`,
        };
      }
    } else if (p1 === undefined) {
      if (prev !== ZERO_HASH) {
        return {
          line: here,
          reason: `prev is not 64 zeros: the file does not start a chain (lines removed from its start, or a file rotated out of a longer chain: verify it after the file before it)`,
        };
      }
    } else if (prev !== p1.hash) {
      return brokenLink(p2, p1, cur, next, expectedSeq);
    }
    if (seq !== expectedSeq) {
      return {
        line: here,
        reason: `seq ${seq} where ${expectedSeq} was expected (its prev matches ${here > 1 ? `line ${here - 1}` : 'the start of the file'}: this line was altered)`,
      };
    }
    lastSeq = seq;
    records += 1;
    return undefined;
  };

  /** `cur.prev` is not the hash of line i-1: decide which line moved, using lines i-2 and i+1. */
  const brokenLink = (p2: Line | undefined, p1: Line, cur: Line, next: Line | undefined, expectedSeq: number): VerifyProblem => {
    const i = cur.no;
    const seq = cur.parsed.kind === 'record' ? cur.parsed.fields.seq : 0;
    const prev = cur.parsed.kind === 'record' ? cur.parsed.fields.prev : '';
    const beforePrevious = p2 ? p2.hash : (after?.hash ?? ZERO_HASH); // line i-2, or the chain start when i = 2
    const nextPrev = next?.parsed.kind === 'record' ? next.parsed.fields.prev : undefined;
    if (cur.hash === p1.hash) return { line: i, reason: `a copy of line ${i - 1}: inserted` };
    if (nextPrev !== undefined && nextPrev === p1.hash)
      return { line: i, reason: `inserted or moved: line ${i + 1} chains to line ${i - 1}` };
    if (prev === beforePrevious)
      return { line: i - 1, reason: `inserted: line ${i} chains to ${i > 2 ? `line ${i - 2}` : 'the start of the file'}, not to it` };
    if (nextPrev === cur.hash) {
      // Line i is vouched for by line i+1.
      if (seq === expectedSeq) return { line: i - 1, reason: `altered: line ${i} was chained to different bytes for it (prev mismatch)` };
      return {
        line: i,
        reason: `prev does not match line ${i - 1} and seq ${seq} does not follow ${expectedSeq - 1}: lines removed or moved before it`,
      };
    }
    if (next === undefined && seq === expectedSeq) {
      return {
        line: i - 1,
        reason: `altered: line ${i}, the last, does not chain to it (or line ${i} itself was forged or its prev altered)`,
      };
    }
    return { line: i, reason: `prev does not match the hash of line ${i - 1}` };
  };

  const last = (): Line | undefined => window[window.length - 1];
  const result = (problem: VerifyProblem | undefined): VerifyResult => ({
    ok: problem === undefined,
    ...(problem === undefined && last() ? { end: { seq: lastSeq, hash: (last() as Line).hash } } : {}),
    ...(after ? { newChain } : {}),
    lines,
    records,
    restarts,
    ...(problem ? { problem } : {}),
  });

  for await (const line of splitLines(input)) {
    lines = line.no;
    window.push(line);
    if (window.length > 4) window.shift();
    if (window.length < 2) continue;
    const n = window.length;
    const problem = check(window[n - 4], window[n - 3], window[n - 2] as Line, window[n - 1]);
    if (problem) return result(problem);
  }
  if (window.length > 0) {
    const n = window.length;
    const problem = check(window[n - 3], window[n - 2], window[n - 1] as Line, undefined);
    if (problem) return result(problem);
  }
  return result(undefined);
}

/** Verifies the audit file at `path`, streaming it in 64 KiB reads. */
export function verifyAuditFile(path: string, options: VerifyOptions = {}): Promise<VerifyResult> {
  return verifyAuditLog(createReadStream(path, { highWaterMark: 64 * 1024 }), options);
}

/** The one-line summary `kmsgw audit verify` prints. */
export function describeResult(r: VerifyResult): string {
  if (r.problem) return `line ${r.problem.line}: ${r.problem.reason}`;
  const restarts =
    r.restarts.length === 0
      ? ''
      : `; ${r.restarts.length} chain restart${r.restarts.length === 1 ? '' : 's'} after a torn line (${r.restarts.map((x) => `line ${x.tornLine}`).join(', ')})`;
  const start = r.newChain ? '; starts a new chain (does not continue the file before it)' : '';
  return `${r.records} records, chain intact${restarts}${start}`;
}
