/**
 * The extension point for where wrapped DEKs live: one object per key id, holding the
 * JSON key record. A backend knows nothing of records' meaning, caching, sockets or the
 * protocol; `KeyStore` (key-store.ts) adds those once, around every backend.
 *
 * Every backend folder exports a class that `satisfies` this contract at compile time
 * and runs test/keystore/conformance.ts against its real emulator.
 */
export interface StoreBackend {
  /** Where records live, without credentials (`s3://bucket/prefix/`), for INFO and logs. */
  readonly location: string;
  /** The object of `id` and its current revision, or undefined when there is none. */
  read(id: string, signal: AbortSignal): Promise<StoredObject | undefined>;
  /**
   * Writes `body` as the object of `id` only if its revision is still `expected`
   * (`null`: only if no object exists). A lost race is `{ ok: false }`, never an
   * overwrite; the write is durable before the promise resolves.
   */
  write(id: string, body: Buffer, expected: string | null, signal: AbortSignal): Promise<WriteResult>;
  /** Every stored id starting with `prefix`, with its revision, in pages as the store returns them. */
  list(prefix: string, signal: AbortSignal): AsyncIterable<ListedObject>;
  /** Releases clients and locks. Idempotent. */
  close(): Promise<void>;
}

/** An object as read: its bytes and the revision a conditional write names (ETag, generation). */
export interface StoredObject {
  readonly body: Buffer;
  readonly revision: string;
}

/** One listed object. */
export interface ListedObject {
  readonly id: string;
  readonly revision: string;
}

/** A conditional write: done with the new revision, or lost to another writer. */
export type WriteResult = { readonly ok: true; readonly revision: string } | { readonly ok: false; readonly conflict: true };

/**
 * A backend could not do what was asked (network, timeout, denied, missing bucket).
 * `message` is safe to show a client: it names the failure, never credentials or
 * SDK internals; the original error is the `cause`, for the log.
 */
export class StoreError extends Error {
  override readonly name = 'StoreError';
}

/** Object stores' largest object name; every backend's names fit (see names.ts). */
export const MAX_OBJECT_NAME_BYTES = 1024;
