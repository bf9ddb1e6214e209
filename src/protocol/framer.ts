/** Receives what the framer finds in the byte stream, in stream order. */
export interface FrameSink {
  /** A complete line, without its LF and without a CR right before it. */
  line(text: string): void;
  /** A line grew past the cap; its remaining bytes up to the next LF are dropped. */
  tooLarge(): void;
}

const LF = 0x0a;
const CR = 0x0d;

/**
 * Splits a byte stream into LF-terminated lines with a hard size cap.
 * Pure: it knows nothing of sockets, so it is tested byte by byte.
 * Memory held is at most `maxLineBytes` plus one chunk, whatever the peer sends.
 */
export class LineFramer {
  private readonly parts: Buffer[] = [];
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

  push(chunk: Buffer, sink: FrameSink): void {
    let start = 0;
    const end = chunk.length;
    while (start < end) {
      const lf = chunk.indexOf(LF, start);
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
        this.parts.push(chunk.subarray(start, end));
        this.pendingBytes += end - start;
        return;
      }
      sink.line(this.take(chunk, start, lf));
      start = lf + 1;
    }
  }

  /** Drops any unfinished line and any discard in progress: back to a clean start. */
  reset(): void {
    this.parts.length = 0;
    this.pendingBytes = 0;
    this.discarding = false;
  }

  private take(chunk: Buffer, start: number, lf: number): string {
    let source = chunk;
    let stop = lf;
    if (this.parts.length > 0) {
      this.parts.push(chunk.subarray(start, lf));
      source = Buffer.concat(this.parts, this.pendingBytes + (lf - start));
      this.reset();
      start = 0;
      stop = source.length;
    }
    if (stop > start && source[stop - 1] === CR) stop--;
    return source.toString('latin1', start, stop);
  }
}
