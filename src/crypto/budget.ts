import { GatewayError } from '../protocol/errors.js';

/**
 * AES-GCM with random 96-bit nonces stays within NIST SP 800-38D's bound only up
 * to 2^32 encryptions per key. This counts ENC per DEK version and refuses ENC
 * past the configured limit, telling the operator to ROTATE.
 *
 * The count is global across every gateway sharing a store, without a disk write
 * per ENC: the stored record holds a reservation counter (an upper bound of all
 * encryptions), and each gateway claims a block of it, `[from, to)`, with one
 * compare-and-swap before using it. Blocks never overlap, so the encryptions of
 * all gateways together never pass the counter, which never passes the limit. A
 * restart or a crash forfeits the rest of a block, never more.
 */
export interface BudgetOptions {
  /** Most encryptions per DEK version. */
  readonly limit: number;
  /** Encryptions claimed per store write. */
  readonly block: number;
  /**
   * Durably claims the next block of a version (at most `block` encryptions) and resolves
   * with it; undefined when the version's counter has reached the limit.
   */
  readonly reserve: (keyId: string, version: number, block: number) => Promise<Block | undefined>;
  /** Told once per threshold crossed (fractions of the limit). */
  readonly warn: (keyId: string, version: number, used: number, fraction: number) => void;
}

/** Encryptions `from` (inclusive) to `to` (exclusive) of one version, owned by this gateway. */
export interface Block {
  readonly from: number;
  readonly to: number;
}

/** Fractions of the limit at which a warning is logged. */
export const WARN_AT = [0.5, 0.75, 0.9] as const;

interface Counter {
  /** The next encryption's number, inside the current block while `next < end`. */
  next: number;
  end: number;
  /** Claimed ahead, used when the current block runs out. */
  queued: Block | undefined;
  pending: Promise<void> | undefined;
  /** The counter reached the limit: no further block exists. */
  exhausted: boolean;
  warned: number;
}

export class EncryptionBudget {
  private readonly counters = new Map<string, Counter>();

  constructor(private readonly options: BudgetOptions) {}

  /** Counts one encryption; synchronous inside a claimed block, else after claiming one. */
  take(keyId: string, version: number): void | Promise<void> {
    const c = this.counter(keyId, version);
    if (c.next >= c.end && c.queued !== undefined) {
      c.next = c.queued.from;
      c.end = c.queued.to;
      c.queued = undefined;
    }
    if (c.next < c.end) {
      c.next++;
      this.checkWarn(keyId, version, c);
      // Claim the next block half a block ahead, so ENC stays synchronous while it is written.
      if (c.end - c.next <= this.options.block / 2 && c.queued === undefined && c.pending === undefined && !c.exhausted) {
        this.claim(keyId, version, c).catch(() => undefined); // retried when the block runs out
      }
      return;
    }
    if (c.exhausted) {
      throw new GatewayError(
        'FORBIDDEN',
        `key version ${version} has reached its encryption limit (${this.options.limit}); ROTATE the key to get a fresh DEK`,
      );
    }
    return (c.pending ?? this.claim(keyId, version, c)).then(() => this.take(keyId, version));
  }

  /** Hands this gateway a block it claimed itself (the first one, stored with a new version). */
  grant(keyId: string, version: number, block: Block): void {
    const c = this.counter(keyId, version);
    if (c.next >= c.end) {
      c.next = block.from;
      c.end = block.to;
    } else c.queued ??= block;
  }

  /** The next encryption number of a version here (an upper bound of the encryptions so far). */
  used(keyId: string, version: number): number | undefined {
    return this.counters.get(`${keyId}@${version}`)?.next;
  }

  private counter(keyId: string, version: number): Counter {
    const key = `${keyId}@${version}`;
    let c = this.counters.get(key);
    if (c === undefined) {
      c = { next: 0, end: 0, queued: undefined, pending: undefined, exhausted: false, warned: 0 };
      this.counters.set(key, c);
    }
    return c;
  }

  private claim(keyId: string, version: number, c: Counter): Promise<void> {
    c.pending = this.options.reserve(keyId, version, this.options.block).then(
      (block) => {
        c.pending = undefined;
        if (block === undefined || block.to <= block.from) c.exhausted = true;
        else c.queued = block;
      },
      (err: unknown) => {
        c.pending = undefined;
        throw err;
      },
    );
    return c.pending;
  }

  private checkWarn(keyId: string, version: number, c: Counter): void {
    while (c.warned < WARN_AT.length && c.next >= (WARN_AT[c.warned] as number) * this.options.limit) {
      this.options.warn(keyId, version, c.next, WARN_AT[c.warned] as number);
      c.warned++;
    }
  }
}
