// Azure Blob Storage failures → a conflict (a lost race) or a StoreError message safe to show a client.
import { NETWORK_ERROR_CODES, TLS_CERT_ERROR_CODES } from '../../net/socket-errors.js';
import type { StoreLocation } from '../url.js';

type AzureLocation = Extract<StoreLocation, { kind: 'azblob' }>;

interface RestLike {
  name?: unknown;
  code?: unknown;
  statusCode?: unknown;
}

const SAFE_CODE_RE = /^[A-Za-z0-9_]{1,64}$/;

/** The service's error code (`x-ms-error-code`), or a Node error code, when it is a plain identifier. */
export function errorCode(err: unknown): string | undefined {
  const code = (err as RestLike | null)?.code;
  return typeof code === 'string' && SAFE_CODE_RE.test(code) ? code : undefined;
}

function statusOf(err: unknown): number | undefined {
  const status = (err as RestLike | null)?.statusCode;
  return typeof status === 'number' ? status : undefined;
}

/**
 * A write lost to another writer: 412 ConditionNotMet (If-Match no longer holds, or the blob is gone), 409
 * BlobAlreadyExists (If-None-Match: * on a blob that exists). A 404 BlobNotFound on a swap is the same: the
 * expected revision is gone. Other 412s and 409s (someone else's lease, an archived blob) are failures: called
 * conflicts, the caller would re-read and retry against them forever.
 */
export function conditionFailed(err: unknown, expected: string | null): boolean {
  const status = statusOf(err);
  const code = errorCode(err);
  if (status === 412) return code === 'ConditionNotMet' || code === undefined;
  if (status === 409) return code === 'BlobAlreadyExists';
  return status === 404 && code === 'BlobNotFound' && expected !== null;
}

const CREDENTIAL_ERRORS: ReadonlySet<string> = new Set([
  'CredentialUnavailableError',
  'AuthenticationError',
  'AggregateAuthenticationError',
]);

/** A short message for a failed call, safe to show a client: no credentials, no service prose. */
export function describeAzureError(
  err: unknown,
  op: 'read' | 'write' | 'list',
  where: Pick<AzureLocation, 'account' | 'container'>,
): string {
  const name = (err as RestLike | null)?.name;
  const status = statusOf(err);
  const code = errorCode(err);
  const tag = code === undefined ? '' : ` (${code})`;
  if (name === 'AbortError' || name === 'TimeoutError') return 'Azure Blob Storage request timed out';
  if (typeof name === 'string' && CREDENTIAL_ERRORS.has(name)) return 'no usable Azure credential for Blob Storage';
  if (status === 401 || status === 403) return `Azure Blob Storage access denied${tag}`;
  if (status === 404 && code === 'ContainerNotFound') {
    return `Azure blob container ${where.container} does not exist in storage account ${where.account}`;
  }
  if (status === 429 || code === 'ServerBusy') return `Azure Blob Storage is throttling requests${tag}`;
  if (status !== undefined && status >= 500) return `Azure Blob Storage service error ${status}${tag}`;
  if (status !== undefined) return `Azure Blob Storage ${op} failed: ${status}${tag}`;
  if (code !== undefined && TLS_CERT_ERROR_CODES.has(code)) return `Azure Blob Storage TLS certificate not trusted (${code})`;
  if (code !== undefined && (NETWORK_ERROR_CODES.has(code) || code === 'REQUEST_SEND_ERROR')) return `Azure Blob Storage unreachable${tag}`;
  return `Azure Blob Storage ${op} failed: unexpected error`;
}
