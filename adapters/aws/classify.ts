import { KmsError } from '../../src/protocol/errors.js';
import { NETWORK_ERROR_CODES } from '../../src/net/socket-errors.js';
import { retryAfterMs } from '../support.js';

/** AWS exception names and what the gateway answers for each. */
const BY_NAME: Readonly<Record<string, readonly [KmsError['code'], string]>> = {
  DisabledException: ['KMS_DENIED', 'AWS KMS: the KEK is disabled'],
  KMSInvalidStateException: ['KMS_DENIED', 'AWS KMS: the KEK is not usable in its current state (pending deletion or import?)'],
  NotFoundException: ['KMS_DENIED', 'AWS KMS: the KEK was not found'],
  AccessDeniedException: ['KMS_DENIED', 'AWS KMS: access to the KEK was denied'],
  InvalidKeyUsageException: ['KMS_DENIED', 'AWS KMS: the KEK does not allow this operation'],
  InvalidGrantTokenException: ['KMS_DENIED', 'AWS KMS: invalid grant token'],
  UnrecognizedClientException: ['KMS_DENIED', 'AWS KMS: credentials were not recognized'],
  InvalidSignatureException: ['KMS_DENIED', 'AWS KMS: request signature was refused'],
  ExpiredTokenException: ['KMS_DENIED', 'AWS KMS: credentials have expired'],
  CredentialsProviderError: ['KMS_DENIED', 'AWS KMS: no AWS credentials found'],
  InvalidCiphertextException: ['DECRYPT_FAILED', 'AWS KMS: the wrapped key does not decrypt under this KEK and context'],
  IncorrectKeyException: ['DECRYPT_FAILED', 'AWS KMS: the wrapped key belongs to another KEK'],
  ThrottlingException: ['THROTTLED', 'AWS KMS: request rate exceeded'],
  LimitExceededException: ['THROTTLED', 'AWS KMS: a quota was exceeded'],
  KMSInternalException: ['KMS_UNAVAILABLE', 'AWS KMS: internal error'],
  DependencyTimeoutException: ['KMS_UNAVAILABLE', 'AWS KMS: dependency timed out'],
  KeyUnavailableException: ['KMS_UNAVAILABLE', 'AWS KMS: the KEK is temporarily unavailable'],
  TimeoutError: ['KMS_UNAVAILABLE', 'AWS KMS: request timed out'],
  AbortError: ['KMS_UNAVAILABLE', 'AWS KMS: request was cut off by its deadline'],
};

interface AwsLikeError {
  name?: unknown;
  code?: unknown;
  $fault?: unknown;
  $metadata?: { httpStatusCode?: unknown };
  $retryable?: { throttling?: unknown };
  /** The HTTP response, which the SDK attaches (not enumerable) to every error it deserialized from one. */
  $response?: { headers?: Record<string, unknown> };
}

/** `Retry-After` (seconds or a date) or `x-amz-retry-after` (ms) of the response the error came from. */
function hint(err: unknown): number | undefined {
  const headers = typeof err === 'object' && err !== null ? (err as AwsLikeError).$response?.headers : undefined;
  if (headers === undefined || headers === null || typeof headers !== 'object') return undefined;
  for (const [name, value] of Object.entries(headers)) {
    if (typeof value !== 'string') continue;
    const lower = name.toLowerCase();
    if (lower === 'retry-after') return retryAfterMs(value);
    if (lower === 'x-amz-retry-after' && /^\d+$/.test(value.trim())) return retryAfterMs(Number(value));
  }
  return undefined;
}

/**
 * Maps anything the AWS SDK throws to a gateway error. The SDK's own message
 * stays in `cause` (logged, never sent); the client sees a fixed text.
 */
export function classify(err: unknown): KmsError {
  const mapped = map(err);
  if (mapped.code !== 'THROTTLED' && mapped.code !== 'KMS_UNAVAILABLE') return mapped;
  const after = hint(err);
  return after === undefined ? mapped : new KmsError(mapped.code, mapped.message, { cause: err, retryAfterMs: after });
}

function map(err: unknown): KmsError {
  const e = (typeof err === 'object' && err !== null ? err : {}) as AwsLikeError;
  const name = typeof e.name === 'string' ? e.name : '';
  const known = BY_NAME[name];
  if (known) return new KmsError(known[0], known[1], { cause: err });
  // The SDK's own configuration error, raised before any request is sent.
  if (err instanceof Error && err.message === 'Region is missing') {
    return new KmsError('KMS_DENIED', 'AWS KMS: no region for this KEK (use an ARN, kms.adapters.aws-kms.region or AWS_REGION)', {
      cause: err,
    });
  }
  if (e.$retryable?.throttling === true) return new KmsError('THROTTLED', 'AWS KMS: request rate exceeded', { cause: err });
  if (typeof e.code === 'string' && NETWORK_ERROR_CODES.has(e.code)) {
    return new KmsError('KMS_UNAVAILABLE', 'AWS KMS: endpoint unreachable', { cause: err });
  }
  const status = e.$metadata?.httpStatusCode;
  if (e.$fault === 'server' || (typeof status === 'number' && status >= 500)) {
    return new KmsError('KMS_UNAVAILABLE', 'AWS KMS: service error', { cause: err });
  }
  if (status === 429) return new KmsError('THROTTLED', 'AWS KMS: request rate exceeded', { cause: err });
  if (status === 403) return new KmsError('KMS_DENIED', 'AWS KMS: access denied', { cause: err });
  return new KmsError('INTERNAL', 'AWS KMS: unexpected error', { cause: err });
}
