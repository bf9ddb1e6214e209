import * as crypto from 'node:crypto';

/** The `prev` of the first line of a file: the start of a chain. */
export const ZERO_HASH = '0'.repeat(64);

/** Longest line read as a record; longer lines are never records (they are hashed, not parsed). */
export const MAX_RECORD_LINE_BYTES = 1024 * 1024;

const HEX64 = /^[0-9a-f]{64}$/;

// crypto.hash (one-shot, no Hash object) exists from Node 20.12; engines allows 20.11.
const oneShot = (crypto as { hash?: (alg: string, data: crypto.BinaryLike, enc: 'hex') => string }).hash;

/** SHA-256 of a line's bytes (a string is hashed as its UTF-8 bytes), in hex. */
export function sha256Hex(data: string | Uint8Array): string {
  return oneShot ? oneShot('sha256', data, 'hex') : crypto.createHash('sha256').update(data).digest('hex');
}

/** The chain fields every line of an audit file carries. */
export interface ChainFields {
  readonly seq: number;
  readonly prev: string;
  /** Set on records the log writes about itself (`chain-restart`); absent on request records. */
  readonly event?: string;
}

/** What a line is: a record of the chain, JSON that is not one, or not JSON at all. */
export type ParsedLine =
  { readonly kind: 'record'; readonly fields: ChainFields } | { readonly kind: 'not-record' } | { readonly kind: 'not-json' };

/** Parses a line's bytes (without LF) as far as the chain needs. */
export function parseLine(bytes: Uint8Array): ParsedLine {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    return { kind: 'not-json' };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { kind: 'not-record' };
  const { seq, prev, event } = value as Record<string, unknown>;
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) return { kind: 'not-record' };
  if (typeof prev !== 'string' || !HEX64.test(prev)) return { kind: 'not-record' };
  return { kind: 'record', fields: { seq, prev, ...(typeof event === 'string' ? { event } : {}) } };
}
