import { KmsError } from '../../src/protocol/errors.js';

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
