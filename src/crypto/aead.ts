import { loadAesGcm, type AesGcmAddon, type NativeGcmKey } from '../native/aesgcm.js';

/** A DEK the cache owns, and its native contexts once one was needed. */
interface Registered {
  readonly keyId: string;
  readonly version: number;
  key: NativeGcmKey | undefined;
}

// Keyed by the DEK buffer itself: only buffers the DEK cache registered get contexts, and the cache
// releases them when it zeroizes the buffer, so no key schedule outlives its DEK.
const registered = new WeakMap<Buffer, Registered>();

/** Lets ENC/DEC keep native AES-GCM contexts for `dek`, a DEK the cache holds for `keyId@version`. */
export function registerDek(dek: Buffer, keyId: string, version: number): void {
  if (loadAesGcm() !== null) registered.set(dek, { keyId, version, key: undefined });
}

/** Frees `dek`'s contexts (cleansing the key schedule): called as the cache zeroizes it. */
export function releaseDek(dek: Buffer): void {
  const entry = registered.get(dek);
  if (entry === undefined) return;
  registered.delete(dek);
  if (entry.key !== undefined) (loadAesGcm() as AesGcmAddon).release(entry.key);
}

/**
 * The native key for a registered DEK used for `keyId@version`, made on first use with the
 * envelope AAD `aad` gives for them; undefined: use node:crypto. `aad` is a plain function (not a
 * closure), so the ENC/DEC hot path allocates nothing here.
 */
export function nativeKeyFor(
  dek: Buffer,
  keyId: string,
  version: number,
  aad: (keyId: string, version: number) => Buffer,
): NativeGcmKey | undefined {
  const entry = registered.get(dek);
  if (entry === undefined || entry.keyId !== keyId || entry.version !== version) return undefined;
  entry.key ??= (loadAesGcm() as AesGcmAddon).createKey(dek, aad(keyId, version));
  return entry.key;
}

export { loadAesGcm };
