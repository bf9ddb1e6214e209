import { randomFillSync } from 'node:crypto';

/** Bytes of an AES-GCM nonce. */
export const NONCE_BYTES = 12;

/**
 * Hands out random 96-bit nonces from a refilled pool, so a small ENC costs
 * one copy instead of one getrandom() call. Each nonce is handed out once.
 */
export class NoncePool {
  private readonly pool: Buffer;
  private offset: number;

  /** @param count nonces drawn per refill. */
  constructor(count = 4096) {
    this.pool = Buffer.alloc(count * NONCE_BYTES);
    this.offset = this.pool.length;
  }

  /** Writes the next nonce into `target` at `at`. */
  writeInto(target: Buffer, at: number): void {
    if (this.offset === this.pool.length) {
      randomFillSync(this.pool);
      this.offset = 0;
    }
    this.pool.copy(target, at, this.offset, this.offset + NONCE_BYTES);
    // Wipe what was handed out so a later reader of the pool cannot replay it.
    this.pool.fill(0, this.offset, this.offset + NONCE_BYTES);
    this.offset += NONCE_BYTES;
  }
}
