import { GatewayError } from './errors.js';

/**
 * True when `text` is canonical, padded, standard-alphabet base64: exactly the
 * string Node would produce for the bytes it decodes to. Node's decoder is
 * lenient (it skips foreign characters, accepts the URL alphabet and missing
 * padding); the round trip refuses all of that, and non-zero trailing bits,
 * in one linear pass each way (a regex was ~20x slower on 64 KiB).
 */
export function isCanonicalBase64(text: string): boolean {
  return text.length % 4 === 0 && Buffer.from(text, 'base64').toString('base64') === text;
}

/**
 * Decodes canonical base64 or throws `BAD_REQUEST` naming `what`.
 * The caller owns the returned buffer and should zeroize it when it held a secret.
 */
export function decodeBase64(text: string, what: string): Buffer {
  if (text.length % 4 !== 0) throw notCanonical(what);
  const bytes = Buffer.from(text, 'base64');
  if (bytes.toString('base64') !== text) {
    bytes.fill(0);
    throw notCanonical(what);
  }
  return bytes;
}

function notCanonical(what: string): GatewayError {
  return new GatewayError('BAD_REQUEST', `${what} is not canonical base64`);
}
