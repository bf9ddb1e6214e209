import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { MAX_RECORD_LINE_BYTES, parseLine, sha256Hex } from './chain.js';

/** The audit file on disk: appending to it, and reading how an existing one ends. */

/** The file the log appends to; injectable so tests can count syncs or make writes fail. */
export interface AuditFile {
  /** Appends all of `data` at the end of the file. */
  append(data: Buffer): Promise<void>;
  /** Forces what was appended to disk. */
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** Opens `path` for appending (O_APPEND, created with `mode`), as an AuditFile. */
export async function openAuditFile(path: string, mode: number): Promise<AuditFile> {
  const handle = await open(path, 'a', mode);
  return {
    async append(data) {
      let done = 0;
      while (done < data.length) done += (await handle.write(data, done, data.length - done)).bytesWritten;
    },
    sync: () => handle.datasync(),
    close: () => handle.close(),
  };
}

/** How an existing file ends, which decides how the chain goes on. */
export type ChainTail =
  /** No file, an empty one, or not a regular file (a FIFO, /dev/...): a new chain. */
  | { readonly kind: 'fresh' }
  /** The last line is a record: continue after it. `needsLf`: it lacks its LF. */
  | { readonly kind: 'continue'; readonly seq: number; readonly prev: string; readonly needsLf: boolean }
  /** The last line is not JSON: a torn write. `lastSeq`: the record before it (0 if none). */
  | { readonly kind: 'torn'; readonly lastSeq: number; readonly tornHash: string; readonly tornBytes: number; readonly needsLf: boolean };

const CHUNK = 64 * 1024;

/** Start of the line that ends at `end` (exclusive): just after the LF before it, or 0. Reads backwards in chunks. */
async function lineStart(handle: FileHandle, end: number): Promise<number> {
  const buf = Buffer.alloc(CHUNK);
  let pos = end;
  while (pos > 0) {
    const from = Math.max(0, pos - CHUNK);
    const { bytesRead } = await handle.read(buf, 0, pos - from, from);
    const lf = buf.subarray(0, bytesRead).lastIndexOf(0x0a);
    if (lf !== -1) return from + lf + 1;
    pos = from;
  }
  return 0;
}

async function readRange(handle: FileHandle, start: number, end: number): Promise<Buffer> {
  const buf = Buffer.alloc(end - start);
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await handle.read(buf, done, buf.length - done, start + done);
    if (bytesRead === 0) throw new Error('the file shrank while it was read');
    done += bytesRead;
  }
  return buf;
}

/** SHA-256 of bytes [start, end) of the file, read in chunks (a torn tail may be long). */
async function hashRange(handle: FileHandle, start: number, end: number): Promise<string> {
  const hash = createHash('sha256');
  for (let pos = start; pos < end; pos += CHUNK) hash.update(await readRange(handle, pos, Math.min(end, pos + CHUNK)));
  return hash.digest('hex');
}

/**
 * Reads how the audit file at `path` ends. Only the last line (and, after a torn
 * one, the line before it) is read: opening does not re-verify the whole file.
 */
export async function readChainTail(path: string): Promise<ChainTail> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'fresh' };
    throw err;
  }
  try {
    const st = await handle.stat();
    if (!st.isFile() || st.size === 0) return { kind: 'fresh' };
    const size = st.size;
    const needsLf = (await readRange(handle, size - 1, size))[0] !== 0x0a;
    const end = needsLf ? size : size - 1;
    const start = await lineStart(handle, end);
    let tornHash: string;
    if (end - start <= MAX_RECORD_LINE_BYTES) {
      const bytes = await readRange(handle, start, end);
      const parsed = parseLine(bytes);
      if (parsed.kind === 'record') return { kind: 'continue', seq: parsed.fields.seq, prev: sha256Hex(bytes), needsLf };
      if (parsed.kind === 'not-record') {
        throw new Error('its last line is JSON but not an audit record; check the file with `kmsgw audit verify` and move it aside');
      }
      tornHash = sha256Hex(bytes);
    } else {
      tornHash = await hashRange(handle, start, end);
    }
    let lastSeq = 0;
    if (start > 0) {
      const before = await readRange(handle, await lineStart(handle, start - 1), start - 1);
      const parsed = before.length <= MAX_RECORD_LINE_BYTES ? parseLine(before) : ({ kind: 'not-json' } as const);
      if (parsed.kind !== 'record') {
        throw new Error('neither of its last two lines is an audit record; check the file with `kmsgw audit verify` and move it aside');
      }
      lastSeq = parsed.fields.seq;
    }
    return { kind: 'torn', lastSeq, tornHash, tornBytes: end - start, needsLf };
  } finally {
    await handle.close();
  }
}
