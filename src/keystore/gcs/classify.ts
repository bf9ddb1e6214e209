import { StoreError } from '../backend.js';

/** What the failed call was doing; a 404 means something else for each. */
export type GcsOp = 'read' | 'write' | 'list';

// Socket-level failures: the store was not reached (or the connection broke), whatever the request was.
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'EPROTO',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

interface ErrorShape {
  readonly name?: unknown;
  readonly code?: unknown;
  readonly type?: unknown;
  readonly message?: unknown;
  readonly errors?: unknown;
}

function shape(err: unknown): ErrorShape {
  return typeof err === 'object' && err !== null ? err : {};
}

function messageOf(err: unknown): string {
  const message = shape(err).message;
  return typeof message === 'string' ? message : '';
}

/** The HTTP status of a Cloud Storage API error (the SDK's ApiError carries it as a numeric `code`). */
export function httpStatus(err: unknown): number | undefined {
  const code = shape(err).code;
  return typeof code === 'number' && code >= 100 && code < 600 ? code : undefined;
}

/** A lost race: the generation precondition failed (412), or a conditional write met a concurrent one (409). */
export function isConflict(err: unknown): boolean {
  const status = httpStatus(err);
  return status === 412 || status === 409;
}

/**
 * A 404 of a download is an absent object, unless the bucket is what is missing: Cloud Storage then says
 * "The specified bucket does not exist." (fake-gcs-server says "Not Found" for both; see the test README).
 */
export function isAbsentObject(err: unknown): boolean {
  return httpStatus(err) === 404 && !saysNoBucket(err);
}

function saysNoBucket(err: unknown): boolean {
  return /bucket does not exist/i.test(messageOf(err));
}

/** The API's error reason (`forbidden`, `rateLimitExceeded`), when it is a plain word. */
function reasonOf(err: unknown): string | undefined {
  let errors = shape(err).errors;
  if (!Array.isArray(errors) || errors.length === 0) {
    // A failed download's message is the raw JSON error body (the SDK does not parse it).
    try {
      errors = (JSON.parse(messageOf(err)) as { error?: { errors?: unknown } }).error?.errors;
    } catch {
      return undefined;
    }
  }
  const first: unknown = Array.isArray(errors) ? errors[0] : undefined;
  const reason = typeof first === 'object' && first !== null ? (first as { reason?: unknown }).reason : undefined;
  return typeof reason === 'string' && /^[A-Za-z]{1,40}$/.test(reason) ? reason : undefined;
}

/** Worth one more attempt: the store was busy or the connection failed (not a timeout: the deadline is near). */
export function isTransient(err: unknown): boolean {
  const status = httpStatus(err);
  if (status !== undefined) return status === 408 || status === 429 || status >= 500;
  const code = shape(err).code;
  return typeof code === 'string' && NETWORK_CODES.has(code) && !code.includes('CERT');
}

/**
 * Maps a failed Cloud Storage call (an SDK ApiError, a socket error, the caller's aborted signal) to a StoreError
 * whose message names the failure and is safe to show a client; the original error is its `cause`.
 */
export function classify(err: unknown, op: GcsOp, bucket: string): StoreError {
  if (err instanceof StoreError) return err;
  const e = shape(err);
  const status = httpStatus(err);
  const code = typeof e.code === 'string' ? e.code : undefined;
  const fail = (message: string): StoreError => new StoreError(message, { cause: err });

  if (e.name === 'TimeoutError' || code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT' || e.type === 'request-timeout') {
    return fail('Cloud Storage request timed out');
  }
  if (e.name === 'AbortError' && code === undefined) return fail('Cloud Storage request was cancelled');
  if (code !== undefined && NETWORK_CODES.has(code)) return fail(`Cloud Storage unreachable (${code})`);
  if (code === 'CONTENT_DOWNLOAD_MISMATCH') return fail('Cloud Storage download did not match its checksum');
  if (/Could not load the default credentials/.test(messageOf(err))) {
    return fail('Cloud Storage credentials not found (Application Default Credentials)');
  }
  if (status === undefined) return fail(`Cloud Storage ${op} failed: unexpected error${code ? ` (${code})` : ''}`);
  const reason = reasonOf(err);
  const detail = reason ? `${reason}, ${status}` : String(status);
  if (status === 401) return fail(`Cloud Storage refused the credentials (${detail})`);
  if (status === 403) return fail(`Cloud Storage access denied (${detail})`);
  // A listing or upload names only the bucket; a download's 404 is an absent object unless it says otherwise.
  if (status === 404 && (op !== 'read' || saysNoBucket(err))) return fail(`Cloud Storage bucket ${bucket} does not exist`);
  if (status === 429) return fail(`Cloud Storage rate limit exceeded (${detail})`);
  if (status === 408 || status >= 500) return fail(`Cloud Storage unavailable (${detail})`);
  return fail(`Cloud Storage ${op} refused (${detail})`);
}
