/** Receives what the framer finds in the byte stream, in stream order. */
export interface FrameSink {
  /** A complete line, without its LF and without a CR right before it. */
  line(text: string): void;
  /** A line grew past the cap; its remaining bytes up to the next LF are dropped. */
  tooLarge(): void;
}

const CR = 0x0d;

/**
 * Splits a byte stream into LF-terminated lines with a hard size cap.
 * Pure: it knows nothing of sockets, so it is tested byte by byte.
 * Memory held is at most `maxLineBytes` plus one chunk, whatever the peer sends.
 *
 * Each chunk is decoded once as latin1 (one character per byte, so lengths
 * are byte counts) and lines are sliced from that string: cheaper than
 * decoding every line from the Buffer.
 */
export class LineFramer {
  private readonly parts: string[] = [];
  private pendingBytes = 0;
  private discarding = false;

  /** @param maxLineBytes longest accepted line, counted without its LF. */
  constructor(readonly maxLineBytes: number) {
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1) {
      throw new RangeError('maxLineBytes must be a positive integer');
    }
  }

  /** Bytes of an unfinished line currently held. */
  get buffered(): number {
    return this.pendingBytes;
  }

  /** True while the rest of an oversize line is being dropped (its LF has not come yet). */
  get discardingLine(): boolean {
    return this.discarding;
  }

  push(chunk: Buffer, sink: FrameSink): void {
    const text = chunk.toString('latin1');
    let start = 0;
    const end = text.length;
    while (start < end) {
      const lf = text.indexOf('\n', start);
      if (this.discarding) {
        if (lf === -1) return;
        this.discarding = false;
        start = lf + 1;
        continue;
      }
      const stop = lf === -1 ? end : lf;
      if (this.pendingBytes + (stop - start) > this.maxLineBytes) {
        this.reset();
        sink.tooLarge();
        if (lf === -1) {
          this.discarding = true;
          return;
        }
        start = lf + 1;
        continue;
      }
      if (lf === -1) {
        this.parts.push(text.slice(start));
        this.pendingBytes += end - start;
        return;
      }
      let line = text.slice(start, lf);
      if (this.parts.length > 0) {
        this.parts.push(line);
        line = this.parts.join('');
        this.parts.length = 0;
        this.pendingBytes = 0;
      }
      sink.line(line.length > 0 && line.charCodeAt(line.length - 1) === CR ? line.slice(0, -1) : line);
      start = lf + 1;
    }
  }

  /** Drops any unfinished line and any discard in progress: back to a clean start. */
  reset(): void {
    this.parts.length = 0;
    this.pendingBytes = 0;
    this.discarding = false;
  }
}
