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
