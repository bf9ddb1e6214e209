import type { Socket } from 'node:net';
import { LineFramer, type FrameSink } from '../protocol/framer.js';
import { formatError, formatReply, type Reply } from '../protocol/reply.js';

/** Limits that apply to one client connection. */
export interface ConnectionLimits {
  /** Longest request line in bytes (without LF); longer ones get `ERR TOO_LARGE`. */
  readonly maxLineBytes: number;
  /** Requests of one connection whose replies are not yet written; reading pauses above it. */
  readonly maxInFlight: number;
  /** Close the connection after this many ms without any traffic (0: never). */
  readonly idleTimeoutMs: number;
  /**
   * Close the connection when a request line has been arriving for this many ms
   * without its LF (a slow sender holding a connection open; 0: never).
   */
  readonly requestTimeoutMs: number;
}

/** Bytes of unfinished lines held across all connections, and what to do past `max`. */
export interface BufferBudget {
  used: number;
  /** Changed by a reload; applies to every connection at once. */
  max: number;
  /** Told when a connection is cut for passing `max`. */
  readonly exceeded: () => void;
}

/** Marks an oversize line's place among deferred lines. */
const TOO_LARGE = Symbol('too large');

interface Slot {
  reply: string | undefined;
}

/** Runs one request line of this connection; answers synchronously when it can. */
export type LineHandler = (line: string) => Reply;

/**
 * One client: frames lines, runs them, writes the replies in request order.
 * Outcomes become protocol text here and nowhere else.
 * Reading pauses while the socket's write buffer is full or too many replies
 * are pending, so a client that pipelines without reading cannot make the
 * server buffer without bound.
 */
export class Connection implements FrameSink {
  private readonly framer: LineFramer;
  private readonly pending: Slot[] = [];
  // Replies made synchronously while one chunk is processed, written in one go.
  private batch = '';
  private inChunk = false;
  private flushQueued = false;
  private writeBlocked = false;
  private closed = false;
  // Lines framed while maxInFlight requests were running: run as slots free up.
  // At most one read's worth, since reading is paused meanwhile.
  private readonly deferred: Array<string | typeof TOO_LARGE> = [];
  private lineCompleted = false;
  // This connection's share of budget.used: its unfinished line.
  private counted = 0;
  // Set by drain(): reading never resumes, and onDrained is called once every request read was answered.
  private draining = false;
  private onDrained: (() => void) | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly handle: LineHandler,
    private readonly limits: ConnectionLimits,
    private readonly budget: BufferBudget = { used: 0, max: Infinity, exceeded: () => undefined },
  ) {
    this.framer = new LineFramer(limits.maxLineBytes);
    socket.setNoDelay?.(true);
    if (limits.idleTimeoutMs > 0) {
      socket.setTimeout(limits.idleTimeoutMs, () => socket.destroy());
    }
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.once('close', () => clearTimeout(this.lineTimer));
    socket.on('drain', () => {
      this.writeBlocked = false;
      this.maybeResume();
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.budget.used -= this.counted;
      this.counted = 0;
      this.closed = true;
      this.framer.reset();
      this.pending.length = 0;
      this.deferred.length = 0;
      this.batch = '';
    });
  }

  /**
   * Graceful shutdown of this connection: stops reading, answers every request
   * already read (deferred ones included), then ends the connection. Lines the
   * kernel still holds are never read, so never executed; a partial line is dropped.
   * Resolves when the last reply is flushed or the connection closed.
   */
  drain(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.draining = true;
      this.onDrained = resolve;
      this.socket.once('close', () => resolve());
      this.socket.pause();
      this.framer.reset();
      this.runDeferred();
      this.flush();
    });
  }

  line(text: string): void {
    this.lineCompleted = true;
    if (this.deferred.length > 0 || this.pending.length >= this.limits.maxInFlight) {
      this.deferred.push(text);
      this.socket.pause();
      return;
    }
    this.enqueue(this.handle(text));
  }

  tooLarge(): void {
    this.lineCompleted = true;
    if (this.deferred.length > 0 || this.pending.length >= this.limits.maxInFlight) {
      this.deferred.push(TOO_LARGE);
      return;
    }
    this.enqueue(this.tooLargeReply());
  }

  private tooLargeReply(): string {
    return formatError('TOO_LARGE', `request line exceeds ${this.limits.maxLineBytes} bytes`);
  }

  /** Runs deferred lines while there is room, in order. */
  private runDeferred(): void {
    const wasInChunk = this.inChunk;
    this.inChunk = true; // batch their synchronous replies into one write
    try {
      while (this.deferred.length > 0 && this.pending.length < this.limits.maxInFlight && !this.closed) {
        const next = this.deferred.shift() as string | typeof TOO_LARGE;
        this.enqueue(next === TOO_LARGE ? this.tooLargeReply() : this.handle(next));
      }
    } finally {
      this.inChunk = wasInChunk;
    }
  }

  private onData(chunk: Buffer): void {
    this.inChunk = true;
    try {
      this.framer.push(chunk, this);
    } finally {
      this.inChunk = false;
    }
    this.budget.used += this.framer.buffered - this.counted;
    this.counted = this.framer.buffered;
    if (this.budget.used > this.budget.max && this.counted > 0) {
      this.budget.exceeded();
      this.socket.destroy();
      return;
    }
    this.watchPartialLine();
    this.flush();
  }

  // A partial line starts the clock; the line must be complete before it runs out.
  private lineTimer: NodeJS.Timeout | undefined;

  private watchPartialLine(): void {
    if (this.limits.requestTimeoutMs <= 0) return;
    // Each completed line restarts the clock for the next one.
    if (this.lineCompleted || (this.framer.buffered === 0 && !this.framer.discardingLine)) {
      this.lineCompleted = false;
      clearTimeout(this.lineTimer);
      this.lineTimer = undefined;
      if (this.framer.buffered === 0 && !this.framer.discardingLine) return;
    }
    if (this.lineTimer !== undefined) return;
    this.lineTimer = setTimeout(() => {
      this.lineTimer = undefined;
      if (this.framer.buffered > 0 || this.framer.discardingLine) this.socket.destroy();
    }, this.limits.requestTimeoutMs);
    this.lineTimer.unref();
  }

  private enqueue(reply: Reply | string): void {
    if (!(reply instanceof Promise)) {
      const text = typeof reply === 'string' ? reply : formatReply(reply);
      if (this.pending.length === 0) {
        this.batch += `${text}\n`;
        if (!this.inChunk) this.flush();
      } else {
        this.pending.push({ reply: text });
      }
      return;
    }
    const slot: Slot = { reply: undefined };
    this.pending.push(slot);
    void reply.then((outcome) => {
      slot.reply = formatReply(outcome);
      this.queueFlush();
    });
    if (this.pending.length >= this.limits.maxInFlight) this.socket.pause();
  }

  private queueFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.closed) return;
    let head = 0;
    while (head < this.pending.length && this.pending[head]?.reply !== undefined) {
      this.batch += `${(this.pending[head] as Slot).reply}\n`;
      head++;
    }
    if (head > 0) this.pending.splice(0, head);
    if (head > 0 && this.deferred.length > 0) {
      this.runDeferred();
      // Deferred lines answered synchronously may now be at the head.
      while (this.pending.length > 0 && this.pending[0]?.reply !== undefined) {
        this.batch += `${(this.pending.shift() as Slot).reply}\n`;
      }
    }
    if (this.batch.length === 0) {
      this.endIfDrained();
      return;
    }
    const out = this.batch;
    this.batch = '';
    // Replies are ASCII: latin1 skips the UTF-8 encoder.
    if (!this.socket.write(out, 'latin1')) {
      this.writeBlocked = true;
      this.socket.pause();
    }
    this.maybeResume();
    this.endIfDrained();
  }

  private endIfDrained(): void {
    const done = this.onDrained;
    if (done === undefined || this.closed || this.pending.length > 0 || this.deferred.length > 0) return;
    this.onDrained = undefined;
    this.socket.end(done);
  }

  private maybeResume(): void {
    if (
      !this.closed &&
      !this.draining &&
      !this.writeBlocked &&
      this.deferred.length === 0 &&
      this.pending.length < this.limits.maxInFlight &&
      this.socket.isPaused()
    ) {
      this.socket.resume();
    }
  }
}
