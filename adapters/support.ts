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

/** Runs one provider call; anything it throws that is not already a gateway error goes through `classify`. */
export async function classifying<T>(fn: () => Promise<T>, classify: (err: unknown) => KmsError): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    throw classify(err);
  }
}

/** Node socket errors that mean "the endpoint could not be reached": KMS_UNAVAILABLE for every cloud. */
export const NETWORK_ERROR_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
]);
