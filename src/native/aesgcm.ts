import { loadAddon } from './addon.js';

/** An AES-256-GCM key held by native/aesgcm.c: OpenSSL contexts with the key schedule set once. */
export type NativeGcmKey = object & { readonly __brand?: 'NativeGcmKey' };

/** What native/aesgcm.c exports. */
export interface AesGcmAddon {
  /** Contexts for `dek` (32 bytes, copied) whose every call also authenticates `aad` first. */
  createKey(dek: Uint8Array, aad: Uint8Array): NativeGcmKey;
  /** Encrypts `plaintext` into `out` after its 17-byte header (nonce at 5..17), tag last. */
  seal(key: NativeGcmKey, out: Uint8Array, plaintext: Uint8Array, aad?: Uint8Array): void;
  /** Decrypts an envelope into `out` (its body length); false, with `out` zeroed, when it does not authenticate. */
  open(key: NativeGcmKey, envelope: Uint8Array, out: Uint8Array, aad?: Uint8Array): boolean;
  /** Frees (so cleanses) the contexts now; the key cannot be used after. */
  release(key: NativeGcmKey): void;
}

let loaded: AesGcmAddon | null | undefined;

/** build/aesgcm.node, loaded once, or null (node:crypto is used instead). */
export function loadAesGcm(): AesGcmAddon | null {
  if (loaded !== undefined) return loaded;
  const found = process.env['KMSGW_NO_NATIVE_AEAD'] === '1' ? { error: 'off' } : loadAddon<AesGcmAddon>('aesgcm');
  return (loaded = 'addon' in found ? found.addon : null);
}
