import { randomBytes } from 'node:crypto';
import type { KmsgwClient } from '../client/index.js';
import { KmsgwError } from '../client/index.js';
import {
  DEFAULT_CHUNK_BYTES,
  STREAM_ID_BYTES,
  StreamReader,
  chunkAad,
  encodeHeader,
  encodeRecord,
  readTrailer,
  trailerPlaintext,
  type StreamRecord,
} from '../stream/format.js';

/** Where stream output goes; `write` resolves when the bytes are taken (backpressure). */
export interface ByteSink {
  write(bytes: Uint8Array): Promise<void>;
}

/** Requests in flight per stream: enough to hide the round trip, bounded memory (~window × 90 KiB). */
const WINDOW = 16;

/** Cuts an async byte source into chunks of exactly `size` bytes (the last may be shorter). */
async function* rechunk(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Buffer> {
  let buf = Buffer.alloc(size);
  let fill = 0;
  for await (const piece of source) {
    let at = 0;
    while (at < piece.length) {
      const n = Math.min(size - fill, piece.length - at);
      buf.set(piece.subarray(at, at + n), fill);
      fill += n;
      at += n;
      if (fill === size) {
        yield buf;
        buf = Buffer.alloc(size);
        fill = 0;
      }
    }
  }
  if (fill > 0) yield buf.subarray(0, fill);
}

/** Runs `work` for items in order with at most WINDOW in flight, handing results to `done` in order. */
async function pipelined<T, R>(
  items: AsyncIterable<T>,
  work: (item: T, i: number) => Promise<R>,
  done: (r: R) => Promise<void>,
): Promise<number> {
  const inFlight: Array<Promise<R>> = [];
  let i = 0;
  try {
    for await (const item of items) {
      const result = work(item, i++);
      // Seen now, thrown when its turn comes: a later failure must not be an unhandled rejection.
      result.catch(() => undefined);
      inFlight.push(result);
      if (inFlight.length >= WINDOW) await done(await (inFlight.shift() as Promise<R>));
    }
    while (inFlight.length > 0) await done(await (inFlight.shift() as Promise<R>));
  } finally {
    // Settle what is left so no rejection goes unhandled after an early failure.
    await Promise.allSettled(inFlight);
  }
  return i;
}

/**
 * Encrypts `input` into the stream format: header, one ENC per chunk (pipelined),
 * then the trailer. `userAad` is bound into every chunk.
 */
export async function encryptStream(
  client: KmsgwClient,
  keyId: string,
  input: AsyncIterable<Uint8Array>,
  out: ByteSink,
  userAad?: Uint8Array,
  chunkBytes = DEFAULT_CHUNK_BYTES,
): Promise<void> {
  const header = { chunkBytes, streamId: randomBytes(STREAM_ID_BYTES) };
  await out.write(encodeHeader(header));
  let total = 0;
  const chunks = await pipelined(
    rechunk(input, chunkBytes),
    async (chunk, i) => {
      total += chunk.length;
      try {
        return await client.enc(keyId, chunk, chunkAad(header, i, false, userAad));
      } finally {
        chunk.fill(0);
      }
    },
    (envelope) => out.write(encodeRecord(envelope)),
  );
  const trailer = await client.enc(keyId, trailerPlaintext(total), chunkAad(header, chunks, true, userAad));
  await out.write(encodeRecord(trailer));
}

/**
 * Decrypts a stream, refusing one that is truncated, reordered, spliced from
 * another stream or tampered with (`DECRYPT_FAILED`). Plaintext reaches `out`
 * chunk by chunk, so a caller that must not leave partial output writes to a
 * temporary file and renames it only when this resolves.
 */
export async function decryptStream(
  client: KmsgwClient,
  keyId: string,
  input: AsyncIterable<Uint8Array>,
  out: ByteSink,
  userAad?: Uint8Array,
): Promise<void> {
  const reader = new StreamReader();
  async function* records(): AsyncGenerator<StreamRecord> {
    for await (const piece of input) yield* reader.push(piece);
  }
  const open = (record: StreamRecord) => {
    const header = reader.streamHeader;
    if (!header) throw new KmsgwError('DECRYPT_FAILED', 'stream has no header');
    return client.dec(keyId, record.envelope, chunkAad(header, record.index, record.last, userAad));
  };
  let total = 0;
  await pipelined(records(), open, async (plaintext) => {
    total += plaintext.length;
    try {
      await out.write(plaintext);
    } finally {
      plaintext.fill(0);
    }
  });
  const trailer = await open(reader.end());
  if (readTrailer(trailer) !== total) throw new KmsgwError('DECRYPT_FAILED', 'stream length does not match its trailer');
}
