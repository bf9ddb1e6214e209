import { createCipheriv, createDecipheriv } from 'node:crypto';
import { GatewayError } from '../protocol/errors.js';
import { loadAesGcm, nativeKeyFor } from './aead.js';
import { NONCE_BYTES, NoncePool } from './nonce.js';

/** First byte of every v1 envelope. */
export const ENVELOPE_V1 = 0x01;
/** 1 format byte + 4 version bytes + 12 nonce bytes. */
export const ENVELOPE_HEADER_BYTES = 1 + 4 + NONCE_BYTES;
export const TAG_BYTES = 16;
/** Bytes an envelope adds to its plaintext (header and tag); also the smallest envelope (empty plaintext). */
export const ENVELOPE_OVERHEAD_BYTES = ENVELOPE_HEADER_BYTES + TAG_BYTES;
export const ENVELOPE_MIN_BYTES = ENVELOPE_OVERHEAD_BYTES;

const ALGORITHM = 'aes-256-gcm';

/**
 * The AAD that binds an envelope to its key id and DEK version:
 * `kmsgw/v1 <key-id> <version>`, then `0x00` and the caller's AAD when given.
 */
export function envelopeAad(keyId: string, version: number, callerAad?: Uint8Array): Buffer {
  const base = `kmsgw/v1 ${keyId} ${version}`;
  if (callerAad === undefined) return Buffer.from(base, 'latin1');
  const out = Buffer.allocUnsafe(base.length + 1 + callerAad.length);
  out.write(base, 0, 'latin1');
  out[base.length] = 0;
  out.set(callerAad, base.length + 1);
  return out;
}

/** Reads the DEK version from an envelope header, or throws `DECRYPT_FAILED`. */
export function envelopeVersion(envelope: Uint8Array): number {
  if (envelope.length < ENVELOPE_MIN_BYTES || envelope[0] !== ENVELOPE_V1) {
    throw new GatewayError('DECRYPT_FAILED', 'not a kmsgw v1 envelope');
  }
  return Buffer.from(envelope.buffer, envelope.byteOffset, envelope.length).readUInt32BE(1);
}

/** What `seal` needs besides the plaintext. */
export interface SealParams {
  readonly dek: Buffer;
  readonly keyId: string;
  readonly version: number;
  readonly aad?: Uint8Array;
}

/**
 * Encrypts into one freshly allocated envelope buffer (no concat per call).
 * `nonceSource` is injectable only so the documented test vector can be reproduced.
 */
export function seal(params: SealParams, plaintext: Uint8Array, nonceSource: NoncePool | Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(ENVELOPE_HEADER_BYTES + plaintext.length + TAG_BYTES);
  out[0] = ENVELOPE_V1;
  out.writeUInt32BE(params.version, 1);
  if (nonceSource instanceof NoncePool) nonceSource.writeInto(out, 5);
  else if (nonceSource.length === NONCE_BYTES) out.set(nonceSource, 5);
  else throw new RangeError(`a nonce is ${NONCE_BYTES} bytes`);
  // A DEK the cache holds has native contexts with its key schedule set once (native/aesgcm.c).
  const key = nativeKeyFor(params.dek, params.keyId, params.version, envelopeAad);
  if (key !== undefined) {
    loadAesGcm()?.seal(key, out, plaintext, params.aad);
    return out;
  }
  const cipher = createCipheriv(ALGORITHM, params.dek, out.subarray(5, ENVELOPE_HEADER_BYTES), {
    authTagLength: TAG_BYTES,
  });
  cipher.setAAD(envelopeAad(params.keyId, params.version, params.aad));
  const body = cipher.update(plaintext);
  body.copy(out, ENVELOPE_HEADER_BYTES);
  const rest = cipher.final();
  let at = ENVELOPE_HEADER_BYTES + body.length;
  if (rest.length > 0) at += rest.copy(out, at);
  cipher.getAuthTag().copy(out, at);
  return out;
}

/**
 * Decrypts and authenticates an envelope. Any mismatch (tampering, wrong key
 * id, version, DEK or AAD) is `DECRYPT_FAILED`; the reason is not told apart.
 */
export function open(params: SealParams, envelope: Uint8Array): Buffer {
  const version = envelopeVersion(envelope);
  if (version !== params.version) {
    throw new GatewayError('DECRYPT_FAILED', 'envelope does not match the key version');
  }
  const env = Buffer.from(envelope.buffer, envelope.byteOffset, envelope.length);
  const tagAt = env.length - TAG_BYTES;
  const key = nativeKeyFor(params.dek, params.keyId, params.version, envelopeAad);
  if (key !== undefined) {
    const body = Buffer.alloc(tagAt - ENVELOPE_HEADER_BYTES);
    if (loadAesGcm()?.open(key, env, body, params.aad) !== true) throw new GatewayError('DECRYPT_FAILED', 'envelope failed authentication');
    return body;
  }
  try {
    const decipher = createDecipheriv(ALGORITHM, params.dek, env.subarray(5, ENVELOPE_HEADER_BYTES), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(envelopeAad(params.keyId, params.version, params.aad));
    decipher.setAuthTag(env.subarray(tagAt));
    const body = decipher.update(env.subarray(ENVELOPE_HEADER_BYTES, tagAt));
    try {
      decipher.final();
    } catch (err) {
      body.fill(0);
      throw err;
    }
    return body;
  } catch (err) {
    throw new GatewayError('DECRYPT_FAILED', 'envelope failed authentication', { cause: err });
  }
}
