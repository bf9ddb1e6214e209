import { GatewayError } from './errors.js';

const EQ = 0x3d;

/** The 6-bit value of a standard-alphabet base64 character (valid input only). */
function sextet(c: number): number {
  if (c >= 0x61) return c - 0x61 + 26; // a-z
  if (c >= 0x41) return c - 0x41; // A-Z
  if (c >= 0x30) return c - 0x30 + 52; // 0-9
  return c === 0x2b ? 62 : 63; // + /
}

/**
 * Decodes `text` if it is canonical, padded, standard-alphabet base64 (exactly the string Node
 * would produce for the bytes), else returns undefined. Node's decoder is lenient: it skips
 * foreign characters, accepts the URL alphabet and missing padding. Rather than re-encoding the
 * result to compare (a second pass over the data: most of an ENC of 1 MiB), the leniencies are
 * refused directly: the URL alphabet and misplaced `=` by native scans, a skipped character by
 * the decoded length, and non-zero trailing bits by the last character before the padding.
 */
function decodeCanonical(text: string): Buffer | undefined {
  const length = text.length;
  if (length % 4 !== 0) return undefined;
  const pad = length === 0 || text.charCodeAt(length - 1) !== EQ ? 0 : text.charCodeAt(length - 2) === EQ ? 2 : 1;
  const firstEq = text.indexOf('=');
  if ((firstEq !== -1 && firstEq < length - pad) || text.indexOf('-') !== -1 || text.indexOf('_') !== -1) return undefined;
  const bytes = Buffer.from(text, 'base64');
  const trailingBits = pad === 0 ? 0 : sextet(text.charCodeAt(length - pad - 1)) & (pad === 1 ? 0b11 : 0b1111);
  if (bytes.length !== (length / 4) * 3 - pad || trailingBits !== 0) {
    bytes.fill(0);
    return undefined;
  }
  return bytes;
}

/** True when `text` is canonical, padded, standard-alphabet base64. */
export function isCanonicalBase64(text: string): boolean {
  const bytes = decodeCanonical(text);
  bytes?.fill(0);
  return bytes !== undefined;
}

/**
 * Decodes canonical base64 or throws `BAD_REQUEST` naming `what`.
 * The caller owns the returned buffer and should zeroize it when it held a secret.
 */
export function decodeBase64(text: string, what: string): Buffer {
  const bytes = decodeCanonical(text);
  if (bytes === undefined) throw new GatewayError('BAD_REQUEST', `${what} is not canonical base64`);
  return bytes;
}
