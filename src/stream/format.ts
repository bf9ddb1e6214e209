/**
 * The kmsgw stream format (docs/protocol.md, "Stream format v1"): how `kmsgw enc`
 * and `kmsgw dec` carry inputs larger than one protocol line, such as 16 MiB WAL
 * segments. The input is cut into chunks; each chunk is one ENC envelope whose
 * caller AAD binds the stream id, the chunk index and a last-chunk flag, so a
 * stream that is truncated, reordered, spliced from another stream or tampered
 * with fails to decrypt. A final trailer chunk carries the total length.
 *
 * Pure: no sockets, no files. The CLI drives it.
 */
import { ENVELOPE_OVERHEAD_BYTES } from '../crypto/envelope.js';

/** `KGWS` */
export const STREAM_MAGIC = Buffer.from('KGWS', 'latin1');
export const STREAM_VERSION = 1;
export const STREAM_ID_BYTES = 16;
/** magic(4) | version(1) | flags(1) | chunk size (uint32 BE) | stream id (16) */
export const STREAM_HEADER_BYTES = 4 + 1 + 1 + 4 + STREAM_ID_BYTES;
/** Default plaintext bytes per chunk: one ENC line of ~87 KiB. */
export const DEFAULT_CHUNK_BYTES = 64 * 1024;
/** Largest chunk size a stream may declare (keeps each ENC line under the default 1 MiB cap). */
export const MAX_CHUNK_BYTES = 512 * 1024;
const TRAILER_PLAINTEXT_BYTES = 8;
const AAD_LABEL = Buffer.from('kmsgw-stream/v1\0', 'latin1');

/** A malformed, truncated or over-long stream; the CLI reports it as DECRYPT_FAILED. */
export class StreamFormatError extends Error {
  override readonly name = 'StreamFormatError';
  readonly code = 'DECRYPT_FAILED' as const;
}

/** Stream parameters from the header. */
export interface StreamHeader {
  readonly chunkBytes: number;
  readonly streamId: Buffer;
}

export function encodeHeader(header: StreamHeader): Buffer {
  if (header.streamId.length !== STREAM_ID_BYTES) throw new RangeError('a stream id is 16 bytes');
  if (!Number.isInteger(header.chunkBytes) || header.chunkBytes < 1 || header.chunkBytes > MAX_CHUNK_BYTES) {
    throw new RangeError(`chunk size must be 1 to ${MAX_CHUNK_BYTES} bytes`);
  }
  const out = Buffer.alloc(STREAM_HEADER_BYTES);
  STREAM_MAGIC.copy(out, 0);
  out[4] = STREAM_VERSION;
  out[5] = 0;
  out.writeUInt32BE(header.chunkBytes, 6);
  header.streamId.copy(out, 10);
  return out;
}

export function decodeHeader(bytes: Uint8Array): StreamHeader {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < STREAM_HEADER_BYTES || !b.subarray(0, 4).equals(STREAM_MAGIC)) {
    throw new StreamFormatError('not a kmsgw stream');
  }
  if (b[4] !== STREAM_VERSION || b[5] !== 0) throw new StreamFormatError('unsupported kmsgw stream version');
  const chunkBytes = b.readUInt32BE(6);
  if (chunkBytes < 1 || chunkBytes > MAX_CHUNK_BYTES) throw new StreamFormatError('stream declares an invalid chunk size');
  return { chunkBytes, streamId: Buffer.from(b.subarray(10, STREAM_HEADER_BYTES)) };
}

/**
 * The caller AAD of chunk `index`: `kmsgw-stream/v1` 0x00 | stream id | chunk size (uint32 BE) |
 * index (uint64 BE) | last (0x00 or 0x01) | the user's AAD, if any. Every header field is in it,
 * so a changed header fails like a changed chunk.
 */
export function chunkAad(header: StreamHeader, index: number, last: boolean, userAad?: Uint8Array): Buffer {
  const out = Buffer.alloc(AAD_LABEL.length + STREAM_ID_BYTES + 4 + 8 + 1 + (userAad?.length ?? 0));
  let at = AAD_LABEL.copy(out, 0);
  at += header.streamId.copy(out, at);
  at = out.writeUInt32BE(header.chunkBytes, at);
  out.writeBigUInt64BE(BigInt(index), at);
  at += 8;
  out[at++] = last ? 1 : 0;
  if (userAad) out.set(userAad, at);
  return out;
}

/** The trailer's plaintext: the total plaintext length as uint64 BE. */
export function trailerPlaintext(totalBytes: number): Buffer {
  const out = Buffer.alloc(TRAILER_PLAINTEXT_BYTES);
  out.writeBigUInt64BE(BigInt(totalBytes));
  return out;
}

export function readTrailer(plaintext: Uint8Array): number {
  if (plaintext.length !== TRAILER_PLAINTEXT_BYTES) throw new StreamFormatError('stream trailer is malformed');
  return Number(Buffer.from(plaintext.buffer, plaintext.byteOffset, plaintext.byteLength).readBigUInt64BE());
}

/** `uint32 BE length | envelope`. */
export function encodeRecord(envelope: Uint8Array): Buffer {
  const out = Buffer.alloc(4 + envelope.length);
  out.writeUInt32BE(envelope.length, 0);
  out.set(envelope, 4);
  return out;
}

/** One record as the reader found it; `last` is known because the reader looks one record ahead. */
export interface StreamRecord {
  readonly index: number;
  readonly envelope: Buffer;
  readonly last: boolean;
}

/**
 * Incremental reader: push bytes, take the records that are complete. A record
 * is released only when the next one (or the end) is seen, so whether it is the
 * trailer is known. Memory held: at most two records.
 */
export class StreamReader {
  // Unconsumed input, kept as pieces and joined only once enough bytes for the next
  // header or record are there: linear in the input however small the reads.
  private parts: Buffer[] = [];
  private partsBytes = 0;
  private header: StreamHeader | undefined;
  private pending: Buffer | undefined;
  private index = 0;
  private ended = false;

  get streamHeader(): StreamHeader | undefined {
    return this.header;
  }

  /** Adds bytes; returns the records now known not to be last. */
  push(chunk: Uint8Array): StreamRecord[] {
    if (this.ended) throw new StreamFormatError('bytes after the end of the stream');
    if (chunk.length > 0) {
      this.parts.push(Buffer.from(chunk));
      this.partsBytes += chunk.length;
    }
    return this.drain();
  }

  /** Marks the end of input; returns the final record (the trailer) or throws if the stream is cut short. */
  end(): StreamRecord {
    this.ended = true;
    if (this.header === undefined) throw new StreamFormatError('stream is truncated: no header');
    if (this.partsBytes > 0) throw new StreamFormatError('stream is truncated inside a record');
    if (this.pending === undefined) throw new StreamFormatError('stream is truncated: no trailer');
    const record = { index: this.index, envelope: this.pending, last: true };
    this.pending = undefined;
    return record;
  }

  /** The first `n` unconsumed bytes as one buffer, or undefined until there are that many. */
  private peek(n: number): Buffer | undefined {
    if (this.partsBytes < n) return undefined;
    if ((this.parts[0] as Buffer).length < n) this.parts = [Buffer.concat(this.parts, this.partsBytes)];
    return (this.parts[0] as Buffer).subarray(0, n);
  }

  private consume(n: number): void {
    const first = this.parts[0] as Buffer;
    this.partsBytes -= n;
    if (first.length === n) this.parts.shift();
    else this.parts[0] = first.subarray(n);
  }

  private drain(): StreamRecord[] {
    const out: StreamRecord[] = [];
    if (this.header === undefined) {
      const bytes = this.peek(STREAM_HEADER_BYTES);
      if (bytes === undefined) return out;
      this.header = decodeHeader(bytes);
      this.consume(STREAM_HEADER_BYTES);
    }
    // A data chunk holds at most chunkBytes; the trailer always holds 8.
    const maxEnvelope = Math.max(this.header.chunkBytes, TRAILER_PLAINTEXT_BYTES) + ENVELOPE_OVERHEAD_BYTES;
    for (;;) {
      const prefix = this.peek(4);
      if (prefix === undefined) break;
      const length = prefix.readUInt32BE(0);
      if (length < ENVELOPE_OVERHEAD_BYTES + 1 || length > maxEnvelope) throw new StreamFormatError('stream record has an invalid length');
      const record = this.peek(4 + length);
      if (record === undefined) break;
      const envelope = Buffer.from(record.subarray(4));
      this.consume(4 + length);
      if (this.pending !== undefined) {
        out.push({ index: this.index, envelope: this.pending, last: false });
        this.index++;
      }
      this.pending = envelope;
    }
    return out;
  }
}
