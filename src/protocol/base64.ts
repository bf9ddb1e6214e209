import { GatewayError } from './errors.js';

// Standard alphabet, padded, canonical: the unused low bits of the last
// character must be zero, so every byte string has exactly one encoding.
const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$/;

/** True when `text` is canonical, padded, standard-alphabet base64. */
export function isCanonicalBase64(text: string): boolean {
  return text.length % 4 === 0 && B64_RE.test(text);
}

/**
 * Decodes canonical base64 or throws `BAD_REQUEST` naming `what`.
 * The caller owns the returned buffer and should zeroize it when it held a secret.
 */
export function decodeBase64(text: string, what: string): Buffer {
  if (!isCanonicalBase64(text)) {
    throw new GatewayError('BAD_REQUEST', `${what} is not canonical base64`);
  }
  return Buffer.from(text, 'base64');
}
