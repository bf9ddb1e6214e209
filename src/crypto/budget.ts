import { GatewayError } from '../protocol/errors.js';

/**
 * AES-GCM with random 96-bit nonces stays within NIST SP 800-38D's bound only up
 * to 2^32 encryptions per key. This counts ENC per DEK version and refuses ENC
 * past the configured limit, telling the operator to ROTATE.
 *
 * Counts survive restarts without a disk write per ENC: the store holds a
 * reservation (an upper bound), raised a block at a time before the block is
 * used. After a restart counting resumes from the reservation, so the count
 * can only be over-estimated, never under.
 */
export interface BudgetOptions {
  /** Most encryptions per DEK version. */
  readonly limit: number;
  /** Encryptions reserved per store write. */
  readonly block: number;
  /** The reservation stored for a version (0 if none). */
  readonly reserved: (keyId: string, version: number) => number;
  /** Durably records a new reservation before it is used. */
  readonly reserve: (keyId: string, version: number, upTo: number) => Promise<void>;
  /** Told once per threshold crossed (fractions of the limit). */
  readonly warn: (keyId: string, version: number, used: number, fraction: number) => void;
}

/** Fractions of the limit at which a warning is logged. */
export const WARN_AT = [0.5, 0.75, 0.9] as const;

interface Counter {
  used: number;
  reserved: number;
  pending: Promise<void> | undefined;
  warned: number;
}

export class EncryptionBudget {
  private readonly counters = new Map<string, Counter>();

  constructor(private readonly options: BudgetOptions) {}

  /** Counts one encryption; synchronous while inside the reservation, else after raising it. */
  take(keyId: string, version: number): void | Promise<void> {
    const key = `${keyId}@${version}`;
    let c = this.counters.get(key);
    if (c === undefined) {
      const reserved = this.options.reserved(keyId, version);
      c = { used: reserved, reserved, pending: undefined, warned: 0 };
      this.counters.set(key, c);
    }
    if (c.used >= this.options.limit) {
      throw new GatewayError(
        'FORBIDDEN',
        `key version ${version} has reached its encryption limit (${this.options.limit}); ROTATE the key to get a fresh DEK`,
      );
    }
    if (c.used < c.reserved) {
      c.used++;
      this.checkWarn(keyId, version, c);
      // Raise the reservation half a block ahead, so ENC stays synchronous while it is written.
      if (c.reserved - c.used <= this.options.block / 2 && c.reserved < this.options.limit && c.pending === undefined) {
        this.raise(keyId, version, c).catch(() => undefined); // retried when the block runs out
      }
      return;
    }
    return (c.pending ?? this.raise(keyId, version, c)).then(() => this.take(keyId, version));
  }

  private raise(keyId: string, version: number, c: Counter): Promise<void> {
    const upTo = Math.min(c.reserved + this.options.block, this.options.limit);
    c.pending = this.options.reserve(keyId, version, upTo).then(
      () => {
        c.reserved = Math.max(c.reserved, upTo);
        c.pending = undefined;
      },
      (err: unknown) => {
        c.pending = undefined;
        throw err;
      },
    );
    return c.pending;
  }

  /** Encryptions counted so far for a version (an upper bound after a restart). */
  used(keyId: string, version: number): number | undefined {
    return this.counters.get(`${keyId}@${version}`)?.used;
  }

  private checkWarn(keyId: string, version: number, c: Counter): void {
    while (c.warned < WARN_AT.length && c.used >= (WARN_AT[c.warned] as number) * this.options.limit) {
      this.options.warn(keyId, version, c.used, WARN_AT[c.warned] as number);
      c.warned++;
    }
  }
}
