import { describe, expect, it } from 'vitest';
import { open, seal } from '../../src/crypto/envelope.js';
import {
  StreamFormatError,
  StreamReader,
  chunkAad,
  decodeHeader,
  encodeHeader,
  encodeRecord,
  readTrailer,
  trailerPlaintext,
} from '../../src/stream/format.js';

// docs/protocol.md, "Stream format v1" test vector; also computed independently with Python's AESGCM.
const DEK = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const STREAM_ID = Buffer.from(Array.from({ length: 16 }, (_, i) => 0xa0 + i));
const HEADER = { chunkBytes: 16, streamId: STREAM_ID };
const PLAINTEXT = Buffer.from('hello, kmsgw stream!');
const USER_AAD = Buffer.from('000000010000000000000003');
const VECTOR =
  '4b475753010000000010a0a1a2a3a4a5a6a7a8a9aaabacadaeaf0000003101000000010101010101010101010101011fa6895907a9480db927006f381426aa4b23426914d31c5917ee831c6de7cd7e000000250100000001020202020202020202020202fe49749abcae6f3006e6ebe58b530b6e68e3bc60000000290100000001030303030303030303030303ee4b3cd60b925202a71c0a710c4abcad3db87e0885e1bad3';

const params = (aad: Buffer) => ({ dek: DEK, keyId: 'demo/key', version: 1, aad });

function buildVector(): Buffer {
  const parts = [encodeHeader({ chunkBytes: 16, streamId: STREAM_ID })];
  [PLAINTEXT.subarray(0, 16), PLAINTEXT.subarray(16)].forEach((chunk, i) => {
    parts.push(encodeRecord(seal(params(chunkAad(HEADER, i, false, USER_AAD)), chunk, Buffer.alloc(12, i + 1))));
  });
  parts.push(encodeRecord(seal(params(chunkAad(HEADER, 2, true, USER_AAD)), trailerPlaintext(20), Buffer.alloc(12, 3))));
  return Buffer.concat(parts);
}

/** Decrypts a whole stream with the DEK directly (what a non-kmsgw reader would do). */
function openAll(stream: Buffer, pieces = 1): Buffer {
  const reader = new StreamReader();
  const out: Buffer[] = [];
  const take = (r: { index: number; envelope: Buffer; last: boolean }) =>
    open(params(chunkAad(reader.streamHeader as typeof HEADER, r.index, r.last, USER_AAD)), r.envelope);
  const step = Math.ceil(stream.length / pieces);
  for (let at = 0; at < stream.length; at += step) for (const r of reader.push(stream.subarray(at, at + step))) out.push(take(r));
  const total = readTrailer(take(reader.end()));
  const plain = Buffer.concat(out);
  if (plain.length !== total) throw new StreamFormatError('length mismatch');
  return plain;
}

describe('stream format v1', () => {
  it('reproduces the documented test vector', () => {
    expect(buildVector().toString('hex')).toBe(VECTOR);
    expect(decodeHeader(Buffer.from(VECTOR, 'hex'))).toEqual({ chunkBytes: 16, streamId: STREAM_ID });
  });

  it('opens the vector whatever the read sizes, byte by byte included', () => {
    const stream = Buffer.from(VECTOR, 'hex');
    for (const pieces of [1, 2, 7, stream.length]) expect(openAll(stream, pieces).equals(PLAINTEXT)).toBe(true);
  });

  it('lays out the chunk AAD as documented', () => {
    expect(chunkAad(HEADER, 258, true, Buffer.from('x')).toString('hex')).toBe(
      `${Buffer.from('kmsgw-stream/v1\0').toString('hex')}${STREAM_ID.toString('hex')}00000010` + '0000000000000102' + '01' + '78',
    );
  });

  it('refuses truncation at every record boundary and inside records', () => {
    const stream = Buffer.from(VECTOR, 'hex');
    for (let cut = 0; cut < stream.length; cut++) {
      expect(() => openAll(stream.subarray(0, cut)), `cut at ${cut}`).toThrow();
    }
  });

  it('refuses reordered and dropped chunks, and chunks spliced from another stream', () => {
    const stream = Buffer.from(VECTOR, 'hex');
    const header = stream.subarray(0, 26);
    const r0 = stream.subarray(26, 26 + 4 + 0x31);
    const r1 = stream.subarray(26 + 4 + 0x31, 26 + 4 + 0x31 + 4 + 0x25);
    const r2 = stream.subarray(26 + 4 + 0x31 + 4 + 0x25);
    expect(Buffer.concat([header, r0, r1, r2]).equals(stream)).toBe(true);
    expect(() => openAll(Buffer.concat([header, r1, r0, r2]))).toThrow(); // reordered
    expect(() => openAll(Buffer.concat([header, r0, r2]))).toThrow(); // a chunk dropped
    expect(() => openAll(Buffer.concat([header, r0, r1]))).toThrow(); // trailer dropped
    expect(() => openAll(Buffer.concat([header, r0, r1, r2, r2]))).toThrow(); // extra record
    const otherHeader = encodeHeader({ chunkBytes: 16, streamId: Buffer.alloc(16, 0xee) });
    expect(() => openAll(Buffer.concat([otherHeader, r0, r1, r2]))).toThrow(); // spliced into another stream
  });

  it('refuses a change to any single byte', () => {
    const stream = Buffer.from(VECTOR, 'hex');
    for (let i = 0; i < stream.length; i++) {
      const bad = Buffer.from(stream);
      bad[i] = (bad[i] as number) ^ 0x01;
      expect(() => openAll(bad), `byte ${i}`).toThrow();
    }
  });

  it('refuses bad headers and absurd record lengths without buffering them', () => {
    expect(() => decodeHeader(Buffer.from('KGWX\x01\x00\x00\x00\x00\x10' + 'a'.repeat(16), 'latin1'))).toThrow(StreamFormatError);
    expect(() => decodeHeader(Buffer.from('KGWS\x02\x00\x00\x00\x00\x10' + 'a'.repeat(16), 'latin1'))).toThrow(/version/);
    expect(() => decodeHeader(Buffer.from('KGWS\x01\x00\x00\x00\x00\x00' + 'a'.repeat(16), 'latin1'))).toThrow(/chunk size/);
    const reader = new StreamReader();
    const header = encodeHeader({ chunkBytes: 16, streamId: STREAM_ID });
    expect(() => reader.push(Buffer.concat([header, Buffer.from([0xff, 0xff, 0xff, 0xff])]))).toThrow(/invalid length/);
  });
});
