/*
 * Over 300 lines because the record cache, the compare-and-swap loop, the outage fallback and the
 * refresh share one memory of entries and one notion of "fresh"; split, each part would reach into it.
 */
import { LRUCache } from 'lru-cache';
import { LimitedWarnings } from '../log/limited.js';
import type { Logger } from '../log/logger.js';
import { GatewayError } from '../protocol/errors.js';
import { StoreError, type StoreBackend } from './backend.js';
import type { Snapshot } from './snapshot.js';
import { forEachBounded } from './run.js';
import { KeyRecordSchema, type KeyRecord } from './types.js';

/** How a `KeyStore` keeps up with its backend. Defaults are the config's (`keystore.*`). */
export interface KeyStoreOptions {
  /** Background refresh period in ms (0: none). Only shared stores need one. @default 0 */
  readonly refreshMs?: number;
  /** Longest wait for one backend call. @default 5000 */
  readonly timeoutMs?: number;
  /** Most records held in memory. @default 10000 */
  readonly cacheRecords?: number;
  /** Local copy for outages (shared stores). */
  readonly snapshot?: Snapshot;
  /** Time source in ms, for the outage back-off. @default Date.now */
  readonly now?: () => number;
}

/** A record as held: from the store with its revision, or from the snapshot (revision unknown). */
interface Entry {
  readonly record: KeyRecord;
  readonly revision: string | undefined;
  /** Order of arrival in memory, so an older read never replaces a newer write. */
  readonly tick: number;
}

/** The backend calls a `KeyStore` makes: a record read, a compare-and-swap write, one page of a listing. */
export const STORE_OPERATIONS = ['read', 'write', 'list'] as const;
export type StoreOperation = (typeof STORE_OPERATIONS)[number];
/** How a backend call ended: answered, failed, timed out, or not made (the store is in its outage back-off). */
export const STORE_OUTCOMES = ['ok', 'error', 'timeout', 'backoff'] as const;
export type StoreOutcome = (typeof STORE_OUTCOMES)[number];

/** Plain counters of backend calls and compare-and-swap conflicts, read by metrics at scrape time. */
export interface StoreStats {
  readonly operations: Record<StoreOperation, Record<StoreOutcome, number>>;
  /** Writes that lost a compare-and-swap to another writer (each is retried on the record read again). */
  conflicts: number;
}

/** Called when a record in memory changes (another host's write, a refresh, this host's write). */
export type ChangeListener = (id: string, before: KeyRecord | undefined, after: KeyRecord | undefined) => void;

/** A change to one record: the new record, or undefined for "leave it as it is". */
export type RecordChange = (current: KeyRecord | undefined) => KeyRecord | undefined | Promise<KeyRecord | undefined>;

const MAX_SWAP_ATTEMPTS = 16;
/** Longest wait, in ms, before another compare-and-swap attempt (2, 4, 8 ... ms, then this). */
const SWAP_BACKOFF_CAP_MS = 64;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5_000;

/**
 * The key records every service reads and writes, over any `StoreBackend`: a bounded
 * in-memory record cache (synchronous `peek` for the hot path), reads on demand instead of
 * a load at start, compare-and-swap updates retried on conflict, deadlines on every backend
 * call, a background refresh that picks up other gateways' changes, and, for shared stores,
 * a local snapshot that serves reads while the store is unreachable.
 */
export class KeyStore {
  /** Backend calls and conflicts so far (metrics). */
  readonly stats: StoreStats = { operations: emptyOperations(), conflicts: 0 };
  private readonly memory: LRUCache<string, Entry>;
  private readonly reads = new Map<string, Promise<Entry | undefined>>();
  private readonly listeners: ChangeListener[] = [];
  private readonly background = new Set<Promise<unknown>>();
  private readonly warnings: LimitedWarnings;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private tick = 0;
  private downUntil = 0;
  private backoffMs = 0;
  private lastFailure: GatewayError | undefined;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly backend: StoreBackend,
    private readonly log: Logger,
    private readonly options: KeyStoreOptions = {},
  ) {
    this.memory = new LRUCache({ max: options.cacheRecords ?? 10_000 });
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.now = options.now ?? Date.now;
    this.warnings = new LimitedWarnings(log);
    const period = options.refreshMs ?? 0;
    if (period > 0) {
      this.timer = setInterval(() => void this.refresh().catch(() => undefined), period);
      this.timer.unref();
    }
  }

  /** Where the records live (`s3://bucket/prefix/`), without credentials. */
  get location(): string {
    return this.backend.location;
  }

  /** Tells `listener` of every change to a record held in memory. */
  watch(listener: ChangeListener): void {
    this.listeners.push(listener);
  }

  /** The record if it is in memory: the synchronous hot path. */
  peek(id: string): KeyRecord | undefined {
    return this.memory.get(id)?.record;
  }

  /** The record from memory, else from the store (else, while it is unreachable, the snapshot). */
  async get(id: string): Promise<KeyRecord | undefined> {
    return (this.memory.get(id) ?? (await this.read(id)))?.record;
  }

  /** The record as the store has it now: for an id or version another gateway may just have made. */
  async fetch(id: string): Promise<KeyRecord | undefined> {
    return (await this.read(id))?.record;
  }

  /** The records held in memory now, without touching their recency (metrics: the nonce budget). */
  *heldRecords(): IterableIterator<KeyRecord> {
    for (const entry of this.memory.values()) yield entry.record;
  }

  /** Ids in sorted order, optionally only those starting with `prefix`. */
  async list(prefix = ''): Promise<string[]> {
    const snapshot = this.options.snapshot;
    try {
      const ids: string[] = [];
      await this.listEach(prefix, (id) => ids.push(id));
      return ids.sort();
    } catch (err) {
      if (snapshot === undefined || !isUnavailable(err)) throw err;
      // What this gateway has seen: its snapshot and memory.
      const ids = new Set(await snapshot.ids(prefix));
      for (const id of this.memory.keys()) if (id.startsWith(prefix)) ids.add(id);
      return [...ids].sort();
    }
  }

  /**
   * Applies `change` to the record of `id` with a compare-and-swap: if another writer got in
   * first, the record is read again and `change` runs again on it. `change` may run more than
   * once and must not have effects outside what it returns. Resolves with the record stored
   * (or the current one, when `change` left it alone).
   */
  async update(id: string, change: RecordChange): Promise<KeyRecord | undefined> {
    if (this.closed) throw new GatewayError('INTERNAL', 'key store is closed');
    let entry = this.memory.get(id);
    if (entry?.revision === undefined) entry = await this.read(id, true);
    for (let attempt = 1; ; attempt++) {
      const next = await change(entry?.record);
      if (next === undefined) return entry?.record;
      const body = serialize(id, next);
      const expected = entry?.revision ?? null;
      let written;
      try {
        written = await this.call('write', (signal) => this.backend.write(id, body, expected, signal));
      } catch (err) {
        // The write may or may not have happened: forget the record, so the next use reads it.
        this.memory.delete(id);
        throw err;
      }
      if (written.ok) {
        this.remember(id, { record: next, revision: written.revision, tick: ++this.tick });
        this.copyToSnapshot(id, body, written.revision);
        return next;
      }
      this.stats.conflicts++;
      if (attempt >= MAX_SWAP_ATTEMPTS) {
        throw new GatewayError('STORE_UNAVAILABLE', 'key record kept changing under this gateway; try again');
      }
      // Full-jitter backoff before trying again: two gateways that keep writing one record would
      // otherwise collide in lockstep, and one could lose every round.
      await new Promise((done) => setTimeout(done, Math.random() * Math.min(SWAP_BACKOFF_CAP_MS, 2 ** attempt)));
      entry = await this.read(id, true);
    }
  }

  /**
   * One refresh pass: lists the store, re-reads every record in memory (and every snapshot
   * copy) whose revision changed, and drops records that are gone. Other gateways' new
   * versions and DESTROYs reach this one here. Runs by itself every `refreshMs`.
   */
  refresh(): Promise<void> {
    this.refreshing ??= this.refreshNow().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    await this.refreshing?.catch(() => undefined);
    await Promise.allSettled([...this.background]);
    await this.options.snapshot?.close();
    await this.backend.close();
  }

  private async refreshNow(): Promise<void> {
    // Copies still being written count with the revision they were taken at.
    await Promise.allSettled([...this.background]);
    const listing = new Map<string, string>();
    await this.listEach('', (id, revision) => listing.set(id, revision));
    const changed = new Set<string>();
    for (const [id, entry] of this.memory.entries()) {
      const now = listing.get(id);
      if (now === undefined) {
        this.memory.delete(id);
        this.notify(id, entry.record, undefined);
      } else if (now !== entry.revision) changed.add(id);
    }
    const snapshot = this.options.snapshot;
    if (snapshot) for (const id of await snapshot.stale(listing)) changed.add(id);
    // A few at a time: a refresh must not crowd out requests. A record that fails is read on its next use.
    await forEachBounded(changed, { concurrency: 8 }, (id) =>
      this.read(id, true).then(
        () => undefined,
        () => undefined,
      ),
    );
    await snapshot
      ?.flush()
      .catch((err: unknown) => this.warnings.warn('snapshot', { err: (err as Error).message }, 'snapshot write failed'));
  }

  /**
   * Lists the store with a deadline per step (a page, as the backend fetches them), not for the
   * whole listing: 100,000 keys are a hundred pages, each well inside `timeoutMs`.
   */
  private async listEach(prefix: string, each: (id: string, revision: string) => void): Promise<void> {
    let iterator: AsyncIterator<{ id: string; revision: string }> | undefined;
    try {
      for (;;) {
        const step = await this.call('list', (signal) => {
          iterator ??= this.backend.list(prefix, signal)[Symbol.asyncIterator]();
          return iterator.next();
        });
        if (step.done === true) return;
        each(step.value.id, step.value.revision);
      }
    } finally {
      await iterator?.return?.().catch(() => undefined);
    }
  }

  /**
   * Reads `id` from the store (one read per id at a time) into memory. While the store is
   * unreachable, the snapshot's copy is used instead, unless `forWrite`: a write needs the
   * store's revision.
   */
  private read(id: string, forWrite = false): Promise<Entry | undefined> {
    const key = forWrite ? `w:${id}` : id;
    let pending = this.reads.get(key);
    if (pending === undefined) {
      pending = this.readNow(id, forWrite).finally(() => this.reads.delete(key));
      this.reads.set(key, pending);
    }
    return pending;
  }

  private async readNow(id: string, forWrite: boolean): Promise<Entry | undefined> {
    const started = ++this.tick;
    let stored;
    try {
      stored = await this.call('read', (signal) => this.backend.read(id, signal));
    } catch (err) {
      if (forWrite || !isUnavailable(err)) throw err;
      const copy = await this.options.snapshot?.read(id).catch(() => undefined);
      if (copy === undefined) throw err;
      const entry: Entry = { record: parse(id, copy, this.log, 'snapshot'), revision: undefined, tick: started };
      return this.rememberIfNewer(id, entry) ?? entry;
    }
    if (stored === undefined) {
      const held = this.memory.get(id);
      if (held !== undefined && held.tick < started) {
        this.memory.delete(id);
        this.notify(id, held.record, undefined);
      }
      return undefined;
    }
    const entry: Entry = { record: parse(id, stored.body, this.log, this.backend.location), revision: stored.revision, tick: started };
    const kept = this.rememberIfNewer(id, entry);
    if (kept === undefined) this.copyToSnapshot(id, stored.body, stored.revision);
    return kept ?? entry;
  }

  /** Puts `entry` in memory unless a newer one arrived meanwhile, which is then returned. */
  private rememberIfNewer(id: string, entry: Entry): Entry | undefined {
    const held = this.memory.peek(id);
    if (held !== undefined && held.tick > entry.tick) return held;
    this.remember(id, entry);
    return undefined;
  }

  private remember(id: string, entry: Entry): void {
    const before = this.memory.peek(id)?.record;
    this.memory.set(id, entry);
    if (before !== undefined && before !== entry.record) this.notify(id, before, entry.record);
  }

  private notify(id: string, before: KeyRecord | undefined, after: KeyRecord | undefined): void {
    for (const listener of this.listeners) listener(id, before, after);
  }

  /** Written in the background: a request does not wait for the local copy. */
  private copyToSnapshot(id: string, body: Buffer, revision: string): void {
    const snapshot = this.options.snapshot;
    if (snapshot === undefined) return;
    const done = snapshot
      .save(id, body, revision)
      .catch((err: unknown) => this.warnings.warn('snapshot', { err: (err as Error).message }, 'snapshot write failed'))
      .finally(() => this.background.delete(done));
    this.background.add(done);
  }

  /**
   * Runs one backend call with a deadline. After a call times out, calls fail at once for a
   * short, growing back-off instead of each waiting out the deadline (reads then go to the
   * snapshot); the first call after it tries again, so the gateway recovers by itself.
   */
  private async call<T>(op: StoreOperation, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const counts = this.stats.operations[op];
    if (this.now() < this.downUntil && this.lastFailure !== undefined) {
      counts.backoff++;
      throw this.lastFailure;
    }
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        abort.abort();
        reject(new StoreError(`key store ${op} timed out after ${this.timeoutMs} ms`));
      }, this.timeoutMs);
    });
    try {
      const result = await Promise.race([fn(abort.signal), deadline]);
      counts.ok++;
      this.backoffMs = 0;
      this.downUntil = 0;
      return result;
    } catch (err) {
      if (timedOut) counts.timeout++;
      else counts.error++;
      if (err instanceof GatewayError) throw err;
      const failure = new GatewayError(
        'STORE_UNAVAILABLE',
        err instanceof StoreError ? err.message : 'key store unavailable: unexpected error',
        { cause: err },
      );
      if (timedOut) {
        // Only a store that hangs trips the back-off: one that fails fast (refused, denied, disk
        // full) costs nothing to ask again, and its reads may still work.
        this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs === 0 ? BACKOFF_FIRST_MS : this.backoffMs * 2);
        this.downUntil = this.now() + this.backoffMs;
        this.lastFailure = failure;
      }
      const cause = err instanceof Error ? { name: err.name, message: err.message, cause: describeCause(err.cause) } : undefined;
      this.warnings.warn(`store-${op}`, { op, store: this.backend.location, cause }, 'key store call failed');
      throw failure;
    } finally {
      clearTimeout(timer);
    }
  }
}

function emptyOperations(): Record<StoreOperation, Record<StoreOutcome, number>> {
  const zero = (): Record<StoreOutcome, number> => ({ ok: 0, error: 0, timeout: 0, backoff: 0 });
  return { read: zero(), write: zero(), list: zero() };
}

function isUnavailable(err: unknown): boolean {
  return err instanceof GatewayError && err.code === 'STORE_UNAVAILABLE';
}

function describeCause(cause: unknown): string | undefined {
  return cause instanceof Error ? `${cause.name}: ${cause.message}` : undefined;
}

/** The stored form of a record: the JSON every backend holds, checked before it leaves. */
export function serialize(id: string, record: KeyRecord): Buffer {
  const checked = KeyRecordSchema.safeParse(record);
  if (!checked.success || checked.data.id !== id) {
    throw new GatewayError('INTERNAL', 'refusing to store an invalid key record', { cause: checked.error });
  }
  return Buffer.from(`${JSON.stringify(checked.data, null, 2)}\n`, 'utf8');
}

/** A stored record, checked; a damaged one is never served, nor overwritten. */
export function parse(id: string, body: Buffer, log: Logger, where: string): KeyRecord {
  try {
    const record = KeyRecordSchema.parse(JSON.parse(body.toString('utf8')));
    if (record.id !== id) throw new Error(`holds key id ${JSON.stringify(record.id)}`);
    return record;
  } catch (err) {
    log.error({ keyId: id, store: where, err: (err as Error).message }, 'stored key record is damaged: run `kmsgw store verify`');
    throw new GatewayError('INTERNAL', 'stored key record is damaged; see the gateway log', { cause: err });
  }
}
