/**
 * The closed set of error codes a reply can carry (`ERR <CODE> <text>`).
 * Documented in docs/protocol.md; adding one is a protocol change.
 */
export const ERROR_CODES = [
  'BAD_REQUEST',
  'UNKNOWN_VERB',
  'TOO_LARGE',
  'NOT_FOUND',
  'EXISTS',
  'FORBIDDEN',
  'DECRYPT_FAILED',
  'KMS_DENIED',
  'KMS_UNAVAILABLE',
  'THROTTLED',
  'STORE_UNAVAILABLE',
  'INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

const CODE_SET: ReadonlySet<string> = new Set(ERROR_CODES);

export function isErrorCode(value: string): value is ErrorCode {
  return CODE_SET.has(value);
}

/**
 * An error whose `message` is safe to show a client: it never holds key
 * material or a raw SDK message (those stay in `cause`, which is never sent).
 */
export class GatewayError extends Error {
  override readonly name: string = 'GatewayError';
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** Raised by KEK adapters after `classify()` has mapped a provider error. */
export class KmsError extends GatewayError {
  override readonly name = 'KmsError';
  /** How long the KMS asked callers to wait before trying again (Retry-After, RetryInfo), in ms. */
  readonly retryAfterMs?: number;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(code, message, options);
    if (options?.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }
}

/** Turns anything thrown into a `GatewayError` fit for a reply. */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError('INTERNAL', 'internal error', { cause: err });
}
