/**
 * Over 300 lines because the audit log is one state machine (batching, fsync policy,
 * the buffer cap, fail-closed and fail-open, reopening for rotation): its fields are shared by every method,
 * and splitting it would spread that state across files.
 */
import { stat } from 'node:fs/promises';
import type { Logger } from '../log/logger.js';
import type { RequestObserver, RequestRecord } from '../request/context.js';
import { sha256Hex, ZERO_HASH } from './chain.js';
import { openAuditFile, readChainTail, type AuditFile } from './file.js';

/** When appended records are forced to disk (fdatasync). */
export type FsyncPolicy = 'always' | 'interval' | 'never';

export interface AuditLogOptions {
  /** Absolute path of the audit file; created when missing. */
  readonly file: string;
  readonly logger: Logger;
  /** Default `interval`. */
  readonly fsync?: FsyncPolicy;
  /** Period of the `interval` policy, in ms (default 1000). */
  readonly fsyncIntervalMs?: number;
  /** Keep serving when records cannot be kept, counting the dropped ones (default false: refuse requests). */
  readonly failOpen?: boolean;
  /** Most bytes of records waiting for the disk (default 16 MiB). */
  readonly maxBufferBytes?: number;
  /** Mode of a newly created file (default 0600). */
  readonly mode?: number;
  /** Opens the file for appending (default: `openAuditFile`). */
  readonly openFile?: (path: string, mode: number) => Promise<AuditFile>;
  /** Runs `fn` every `ms` until the returned function is called (default: an unref'd setInterval). */
  readonly every?: (ms: number, fn: () => void) => () => void;
  /** Clock for the log's own records (default: `new Date()`). */
  readonly now?: () => Date;
}

export const DEFAULT_MAX_BUFFER_BYTES = 16 * 1024 * 1024;

/** What `reopen()` did. */
export type ReopenOutcome = 'reopened' | 'unchanged';

interface FileId {
  readonly dev: number;
  readonly ino: number;
}

/** Device and inode of the file now at `path`, or undefined when there is none. */
async function fileIdOf(path: string): Promise<FileId | undefined> {
  const st = await stat(path).catch(() => undefined);
  return st ? { dev: st.dev, ino: st.ino } : undefined;
}

function defaultEvery(ms: number, fn: () => void): () => void {
  const timer = setInterval(fn, ms);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * The audit log: one JSON line per request, hash-chained (docs/audit.md).
 *
 * `record()` only queues the record; serializing, hashing and writing happen in a
 * batch on the next `setImmediate`, one `append` per batch, so the request path never
 * waits for the disk. What is queued is capped (`maxBufferBytes`). When records can no
 * longer be kept (the cap is passed, a write or fsync fails), the log fails closed:
 * `available` turns false for good and the gateway refuses requests; with `failOpen`
 * it stays available and counts what it drops instead.
 */
export class AuditLog implements RequestObserver {
  private readonly log: Logger;
  private readonly policy: FsyncPolicy;
  private readonly failOpen: boolean;
  private readonly maxBufferBytes: number;
  private readonly stopTimer: (() => void) | undefined;

  private seq: number;
  private prev: string;
  private pending: RequestRecord[] = [];
  private scheduled = false;
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private queuedLines = 0;
  private writingBytes = 0;
  private writingLines = 0;
  private writing = false;
  private dirty = false;
  private syncing: Promise<void> | undefined;
  private idleWaiters: Array<() => void> = [];
  /** No more writes: a write or fsync failed. */
  private broken = false;
  /** The buffer passed its cap (fail closed: requests are refused from then on). */
  private overCap = false;
  private closed = false;
  private closing: Promise<void> | undefined;
  private droppedCount = 0;
  /** While a reopen swaps files, no batch is started and no interval fsync runs. */
  private paused = false;
  private reopening: Promise<ReopenOutcome> | undefined;
  private writeWaiters: Array<() => void> = [];

  private constructor(
    private file: AuditFile,
    private fileId: FileId | undefined,
    readonly path: string,
    private readonly options: AuditLogOptions,
    seq: number,
    prev: string,
  ) {
    this.log = options.logger;
    this.policy = options.fsync ?? 'interval';
    this.failOpen = options.failOpen ?? false;
    this.maxBufferBytes = options.maxBufferBytes ?? DEFAULT_MAX_BUFFER_BYTES;
    this.seq = seq;
    this.prev = prev;
    this.stopTimer =
      this.policy === 'interval' ? (options.every ?? defaultEvery)(options.fsyncIntervalMs ?? 1000, () => this.onInterval()) : undefined;
  }

  /**
   * Opens (or creates, mode 0600) the audit file and finds where its chain ends.
   * A torn last line gets a `chain-restart` record, written and synced before this
   * resolves. Rejects with an error naming the file when it cannot be used.
   */
  static async open(options: AuditLogOptions): Promise<AuditLog> {
    const path = options.file;
    const now = options.now ?? (() => new Date());
    let file: AuditFile;
    try {
      file = await (options.openFile ?? openAuditFile)(path, options.mode ?? 0o600);
    } catch (err) {
      throw new Error(`cannot open audit log ${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const tail = await readChainTail(path);
      let seq = 0;
      let prev = ZERO_HASH;
      let head = '';
      if (tail.kind === 'continue') {
        seq = tail.seq;
        prev = tail.prev;
        if (tail.needsLf) head = '\n';
      } else if (tail.kind === 'torn') {
        const reason = `the last line (${tail.tornBytes} bytes) is not valid JSON: a write cut short, most likely by a crash; records in it are lost`;
        const line = JSON.stringify({
          seq: tail.lastSeq + 1,
          prev: tail.tornHash,
          time: now().toISOString(),
          event: 'chain-restart',
          reason,
        });
        head = `${tail.needsLf ? '\n' : ''}${line}\n`;
        seq = tail.lastSeq + 1;
        prev = sha256Hex(line);
        options.logger.warn(
          { file: path, tornBytes: tail.tornBytes, seq },
          'audit log: torn last line; started a new chain segment (chain-restart record)',
        );
      }
      if (head !== '') {
        await file.append(Buffer.from(head, 'utf8'));
        await file.sync();
      }
      options.logger.info({ file: path, seq, fsync: options.fsync ?? 'interval', failOpen: options.failOpen ?? false }, 'audit log open');
      return new AuditLog(file, await fileIdOf(path), path, options, seq, prev);
    } catch (err) {
      await file.close().catch(() => undefined);
      throw new Error(`cannot use audit log ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** False when records can no longer be kept and the gateway must refuse requests. */
  get available(): boolean {
    if (this.closed) return false;
    return this.failOpen || (!this.broken && !this.overCap);
  }

  /** Records dropped so far (fail-open, or after a failure or close). */
  get dropped(): number {
    return this.droppedCount;
  }

  /** Sequence number of the last record queued. */
  get lastSeq(): number {
    return this.seq;
  }

  /** Queues one record; never blocks, never throws. */
  record(entry: RequestRecord): void {
    if (this.closed || this.broken) {
      this.drop(1, this.closed ? 'closed' : 'broken');
      return;
    }
    this.pending.push(entry);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.onTick);
    }
  }

  /** Resolves when every record queued before the call is written (and synced, under `always`). */
  flush(): Promise<void> {
    this.serializePending();
    this.pump();
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Log rotation (SIGHUP): when the file at `path` is no longer the one being written (it was
   * renamed, e.g. by logrotate), writes the batch in flight to the old file, fsyncs and closes
   * it, and appends from then on to a new file at `path` (created with the log's mode). The chain
   * goes on across the files: the new file's first record has the next `seq` and, as `prev`, the
   * hash of the old file's last line (docs/audit.md, "Rotation"). Resolves `unchanged` when `path`
   * is still the file being written. Rejects, still writing to the old file, when the new one
   * cannot be opened or already holds lines (a chain of its own that this one must not follow).
   */
  reopen(): Promise<ReopenOutcome> {
    const run = (this.reopening ?? Promise.resolve<ReopenOutcome>('unchanged'))
      .catch(() => 'unchanged' as const)
      .then(() => this.reopenNow());
    this.reopening = run;
    return run;
  }

  private async reopenNow(): Promise<ReopenOutcome> {
    if (this.closed) throw new Error('the audit log is closed');
    if (this.broken) throw new Error('the audit log failed earlier (see the fatal line); restart the gateway to use it again');
    const now = await fileIdOf(this.path);
    if (now && this.fileId && now.dev === this.fileId.dev && now.ino === this.fileId.ino) return 'unchanged';
    let next: AuditFile;
    try {
      next = await (this.options.openFile ?? openAuditFile)(this.path, this.options.mode ?? 0o600);
    } catch (err) {
      throw new Error(`cannot open audit log ${this.path}: ${(err as Error).message}`, { cause: err });
    }
    this.paused = true;
    try {
      const tail = await readChainTail(this.path);
      if (tail.kind !== 'fresh') {
        throw new Error(`${this.path} already holds audit lines; move it aside (records go on to the old file meanwhile)`);
      }
      while (this.writing) await new Promise<void>((resolve) => this.writeWaiters.push(resolve));
      if (this.closed) throw new Error('the audit log was closed meanwhile');
      await this.syncNow();
      if (this.broken) throw new Error('the old audit file could not be synced; records are at risk (see the fatal line)');
      const old = this.file;
      this.file = next;
      this.fileId = await fileIdOf(this.path);
      await old
        .close()
        .catch((err: unknown) => this.log.warn({ err: (err as Error).message }, 'audit log: closing the rotated file failed'));
      this.log.info({ file: this.path, seq: this.seq }, 'audit log reopened (rotation): the chain goes on in the new file');
      return 'reopened';
    } catch (err) {
      if (this.file !== next) await next.close().catch(() => undefined);
      throw err;
    } finally {
      this.paused = false;
      this.pump();
    }
  }

  /** Writes what is queued, fsyncs (whatever the policy) and closes the file. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.reopening) await this.reopening.catch(() => undefined);
      this.closed = true; // records from now on are dropped (counted); what is queued is written
      this.stopTimer?.();
      await this.flush();
      if (!this.broken) await this.syncNow();
      await this.file
        .close()
        .catch((err: unknown) => this.log.error({ file: this.path, err: (err as Error).message }, 'audit log: close failed'));
      if (this.droppedCount > 0) this.log.warn({ file: this.path, dropped: this.droppedCount }, 'audit log closed; records were dropped');
    })();
    return this.closing;
  }

  private readonly onTick = (): void => {
    this.scheduled = false;
    this.serializePending();
    this.pump();
  };

  private serializePending(): void {
    if (this.pending.length === 0) return;
    const entries = this.pending;
    this.pending = [];
    let text = '';
    let lines = 0;
    for (const e of entries) {
      if (this.broken) {
        this.drop(1, 'broken');
        continue;
      }
      if (this.failOpen && this.queuedBytes + this.writingBytes + text.length > this.maxBufferBytes) {
        // Dropped before it is chained: the chain in the file stays whole, only shorter.
        this.drop(1, 'buffer full');
        continue;
      }
      // Fields are copied one by one: nothing else a record object might carry reaches the file.
      // (JSON.stringify leaves out the undefined ones.)
      const line = JSON.stringify({
        seq: this.seq + 1,
        prev: this.prev,
        time: e.time,
        client: e.client,
        verb: e.verb,
        keyId: e.keyId,
        version: e.version,
        outcome: e.outcome,
        latencyMs: e.latencyMs,
        kek: e.kek,
      });
      this.seq += 1;
      this.prev = sha256Hex(line);
      text += `${line}\n`;
      lines += 1;
    }
    if (lines === 0) return;
    const buf = Buffer.from(text, 'utf8');
    this.queue.push(buf);
    this.queuedBytes += buf.length;
    this.queuedLines += lines;
    if (!this.failOpen && !this.overCap && this.queuedBytes + this.writingBytes > this.maxBufferBytes) {
      // Requests already answered keep their records (they are still written); new ones are refused.
      this.overCap = true;
      this.log.fatal(
        { file: this.path, bufferedBytes: this.queuedBytes + this.writingBytes, maxBufferBytes: this.maxBufferBytes },
        'audit log unavailable: records wait for the disk beyond the buffer cap; requests are refused',
      );
    }
  }

  private pump(): void {
    if (this.writing || this.paused) return;
    if (this.broken || this.queue.length === 0) {
      this.notifyIdle();
      return;
    }
    const batch = this.queue.length === 1 ? (this.queue[0] as Buffer) : Buffer.concat(this.queue, this.queuedBytes);
    this.queue = [];
    this.writingBytes = this.queuedBytes;
    this.writingLines = this.queuedLines;
    this.queuedBytes = 0;
    this.queuedLines = 0;
    this.writing = true;
    void this.write(batch);
  }

  private async write(batch: Buffer): Promise<void> {
    try {
      await this.file.append(batch);
      this.dirty = true;
      if (this.policy === 'always') await this.syncNow();
    } catch (err) {
      this.breakDown('write', err);
    }
    this.writing = false;
    this.writingBytes = 0;
    this.writingLines = 0;
    for (const resolve of this.writeWaiters.splice(0)) resolve();
    this.pump();
  }

  /** fdatasync of everything appended before the call (waits out a sync in progress); failures break the log. Never rejects. */
  private async syncNow(): Promise<void> {
    while (this.syncing) await this.syncing;
    if (this.broken) return;
    this.dirty = false;
    const run = (async () => {
      try {
        await this.file.sync();
      } catch (err) {
        this.breakDown('fsync', err);
      }
    })();
    this.syncing = run;
    await run;
    if (this.syncing === run) this.syncing = undefined;
  }

  private onInterval(): void {
    if (this.dirty && !this.syncing && !this.broken && !this.closed && !this.paused) void this.syncNow();
  }

  private breakDown(op: 'write' | 'fsync', err: unknown): void {
    if (this.broken) return;
    this.broken = true;
    // The batch being written may be in the file in part; queued records are lost. Pending ones are dropped as they come.
    const lost = this.queuedLines + this.writingLines;
    this.queue = [];
    this.queuedBytes = 0;
    this.queuedLines = 0;
    const detail = {
      file: this.path,
      op,
      err: (err as Error)?.message ?? String(err),
      code: (err as NodeJS.ErrnoException)?.code,
      recordsAtRisk: lost,
    };
    if (this.failOpen) {
      this.log.warn(detail, `audit log ${op} failed; serving on without an audit log (audit.failOpen), records are dropped until restart`);
    } else {
      this.log.fatal(detail, `audit log unavailable: ${op} failed; requests are refused`);
    }
    this.drop(lost, op);
    this.notifyIdle();
  }

  private drop(n: number, reason: string): void {
    const before = this.droppedCount;
    this.droppedCount += n;
    // A warning at 1, 10, 100, ... dropped records: visible, never a flood. (Fail closed
    // logged its fatal line already; records of requests still running at close are counted.)
    if ((this.failOpen || this.closed) && Math.floor(Math.log10(this.droppedCount)) > Math.floor(Math.log10(Math.max(before, 0.5)))) {
      this.log.warn(
        { file: this.path, dropped: this.droppedCount, reason },
        this.closed ? 'audit records dropped: they came after the log was closed' : 'audit records dropped (audit.failOpen)',
      );
    }
  }

  private isIdle(): boolean {
    return !this.writing && (this.broken || this.queue.length === 0) && this.pending.length === 0;
  }

  private notifyIdle(): void {
    if (!this.isIdle()) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }
}
