import { KmsError } from '../../src/protocol/errors.js';
import { retryAfterMs } from '../support.js';

/** gRPC status codes (google.rpc.Code). */
export const GRPC = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** Which call failed: INVALID_ARGUMENT means a bad blob on decrypt, a bad request otherwise. */
export type GcpOp = 'encrypt' | 'decrypt';

/**
 * Maps a Cloud KMS (gRPC / google-gax) error to a gateway error. The server's
 * own message stays in `cause` (logged, never sent).
 */
export function classify(err: unknown, op: GcpOp): KmsError {
  const mapped = map(err, op);
  if (mapped.code !== 'THROTTLED' && mapped.code !== 'KMS_UNAVAILABLE') return mapped;
  const after = retryDelay(err);
  return after === undefined ? mapped : new KmsError(mapped.code, mapped.message, { cause: err, retryAfterMs: after });
}

/** Reads a google.protobuf.Int64Value whatever form the client decoded it in (number, string, Long). */
export function int64(value: { value?: unknown } | null | undefined): number | undefined {
  const raw = value?.value;
  if (raw === undefined || raw === null) return undefined;
  // A Long (protobufjs' int64) prints its decimal value.
  const n = Number(typeof raw === 'object' ? (raw as { toString(): string }).toString() : raw);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * The delay of a google.rpc.RetryInfo in the error's status details (google-gax decodes the
 * `grpc-status-details-bin` trailer into `statusDetails`), in ms.
 */
function retryDelay(err: unknown): number | undefined {
  const details = typeof err === 'object' && err !== null ? (err as { statusDetails?: unknown }).statusDetails : undefined;
  if (!Array.isArray(details)) return undefined;
  for (const detail of details as unknown[]) {
    const delay = (detail as { retryDelay?: { seconds?: unknown; nanos?: unknown } } | null)?.retryDelay;
    if (delay === undefined || delay === null) continue;
    return retryAfterMs((int64({ value: delay.seconds }) ?? 0) * 1000 + (int64({ value: delay.nanos }) ?? 0) / 1e6);
  }
  return undefined;
}

function map(err: unknown, op: GcpOp): KmsError {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  switch (code) {
    case GRPC.PERMISSION_DENIED:
      return new KmsError('KMS_DENIED', 'Cloud KMS: permission denied on the KEK', { cause: err });
    case GRPC.UNAUTHENTICATED:
      return new KmsError('KMS_DENIED', 'Cloud KMS: credentials were refused', { cause: err });
    case GRPC.NOT_FOUND:
      return new KmsError('KMS_DENIED', 'Cloud KMS: the KEK was not found', { cause: err });
    case GRPC.FAILED_PRECONDITION:
      return new KmsError('KMS_DENIED', 'Cloud KMS: the KEK version is disabled or destroyed', { cause: err });
    case GRPC.INVALID_ARGUMENT:
      return op === 'decrypt'
        ? new KmsError('DECRYPT_FAILED', 'Cloud KMS: the wrapped key does not decrypt under this KEK and AAD', { cause: err })
        : new KmsError('INTERNAL', 'Cloud KMS: the request was refused as invalid', { cause: err });
    case GRPC.RESOURCE_EXHAUSTED:
      return new KmsError('THROTTLED', 'Cloud KMS: quota exceeded', { cause: err });
    case GRPC.UNAVAILABLE:
    case GRPC.DEADLINE_EXCEEDED:
    case GRPC.CANCELLED:
    case GRPC.ABORTED:
    case GRPC.INTERNAL:
    case GRPC.UNKNOWN:
      return new KmsError('KMS_UNAVAILABLE', 'Cloud KMS: service unavailable or too slow', { cause: err });
    default:
      return new KmsError('INTERNAL', 'Cloud KMS: unexpected error', { cause: err });
  }
}
