import { GatewayError, KmsError } from '../src/protocol/errors.js';

/**
 * Bytes from a KMS response as a Buffer view (not a copy): the guard copies
 * key material into `Buffer.alloc` memory and zeroizes this view.
 * An empty or missing field is the provider's fault, so `INTERNAL`.
 */
export function responseBytes(value: unknown, provider: string, what: string): Buffer {
  if (!(value instanceof Uint8Array) || value.length === 0) throw new KmsError('INTERNAL', `${provider} returned no ${what}`);
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

/** The longest wait a KMS throttling hint is believed for, in ms: a wrong header must not park a KEK for hours. */
export const MAX_RETRY_AFTER_MS = 60_000;

/**
 * A KMS's hint of when to try again, in ms from `now`, capped at MAX_RETRY_AFTER_MS: an HTTP
 * `Retry-After` (delta-seconds, or an HTTP date) or a duration already in ms. Undefined when
 * absent or unreadable.
 */
export function retryAfterMs(value: string | number | null | undefined, now = Date.now()): number | undefined {
  let ms: number;
  if (typeof value === 'number') ms = value;
  else if (typeof value !== 'string' || value.trim() === '') return undefined;
  else if (/^\d+(\.\d+)?$/.test(value.trim())) ms = Number(value.trim()) * 1000;
  else ms = Date.parse(value) - now;
  if (!Number.isFinite(ms)) return undefined;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, Math.ceil(ms)));
}

/** Runs one provider call; anything it throws that is not already a gateway error goes through `classify`. */
export async function classifying<T>(fn: () => Promise<T>, classify: (err: unknown) => KmsError): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    throw classify(err);
  }
}

/** Something holding sockets or channels; `close()` releases them. */
export interface Closable {
  close?(): void | Promise<void>;
}

/** One user's hold on a shared client. */
export interface Lease<C> {
  /** The client; throws `INTERNAL` once this lease is released. */
  readonly client: C;
  /** Gives the client back; the last user's release closes it. Idempotent. */
  release(): Promise<void>;
}

/**
 * Clients shared by every wrapper (of every gateway in the process) with equal
 * settings, counted so that closing one wrapper never breaks another and the
 * last one out closes the client.
 */
export class SharedClients<K, C extends Closable> {
  private readonly entries = new Map<K, { readonly client: C; users: number }>();

  /** The client for `key`, made by `make` when none is open, held until the lease is released. */
  acquire(key: K, make: () => C): Lease<C> {
    let entry = this.entries.get(key);
    if (entry === undefined) {
      entry = { client: make(), users: 0 };
      this.entries.set(key, entry);
    }
    entry.users++;
    const held = entry;
    let released = false;
    return {
      get client(): C {
        if (released) throw new GatewayError('INTERNAL', 'KEK adapter is closed');
        return held.client;
      },
      release: async () => {
        if (released) return;
        released = true;
        if (--held.users > 0) return;
        this.entries.delete(key);
        await held.client.close?.();
      },
    };
  }

  /** How many leases on `key` are open (for tests and metrics). */
  users(key: K): number {
    return this.entries.get(key)?.users ?? 0;
  }
}

/** A lease on a client nobody shares (a test's port, an embedder's client). */
export function soleLease<C extends Closable>(client: C): Lease<C> {
  return new SharedClients<null, C>().acquire(null, () => client);
}
