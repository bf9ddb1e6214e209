/** Length in bytes of every DEK and of the local KEK: AES-256. */
export const KEY_BYTES = 32;

/** A zero-filled buffer for key material, never a slice of Node's shared pool. */
export function allocSecret(size: number = KEY_BYTES): Buffer {
  return Buffer.alloc(size);
}

/** Copies `source` into a fresh secret buffer (so the caller may zeroize the source). */
export function copySecret(source: Uint8Array): Buffer {
  const out = Buffer.alloc(source.length);
  out.set(source);
  return out;
}

/** Overwrites with zeros; tolerates undefined so it fits in `finally`. */
export function zeroize(...buffers: Array<Uint8Array | undefined | null>): void {
  for (const b of buffers) b?.fill(0);
}

/**
 * Buffers of key material tracked by one scope and zeroized together when it
 * ends, so no exit path (return, throw, rejection) has to remember them.
 */
export class SecretScope {
  private readonly held: Uint8Array[] = [];

  /** A fresh zeroed secret buffer owned by this scope. */
  alloc(size: number = KEY_BYTES): Buffer {
    return this.track(Buffer.alloc(size));
  }

  /** Takes ownership of `buffer`: it is zeroized when the scope ends. */
  track<T extends Uint8Array>(buffer: T): T {
    this.held.push(buffer);
    return buffer;
  }

  /** Zeroizes everything tracked so far. */
  end(): void {
    for (const b of this.held) b.fill(0);
    this.held.length = 0;
  }
}

/**
 * Runs `fn` with a scope and zeroizes what it tracked in one place: at once
 * when `fn` returns or throws, after settling when it returns a promise. A
 * synchronous result stays synchronous (the cached fast path depends on it).
 */
export function withSecrets<T>(fn: (scope: SecretScope) => T): T {
  const scope = new SecretScope();
  let result: T;
  try {
    result = fn(scope);
  } catch (err) {
    scope.end();
    throw err;
  }
  if (result instanceof Promise) return result.finally(() => scope.end()) as T;
  scope.end();
  return result;
}
