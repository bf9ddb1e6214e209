import { KmsError } from '../../src/protocol/errors.js';
import { NETWORK_ERROR_CODES, TLS_CERT_ERROR_CODES } from '../../src/net/socket-errors.js';
import { retryAfterMs } from '../support.js';

/** Which call failed: a 400 means a bad blob on unwrap, a bad request on wrap. */
export type AzureOp = 'wrap' | 'unwrap';

interface RestLike {
  name?: unknown;
  code?: unknown;
  statusCode?: unknown;
  message?: unknown;
  response?: { headers?: { get?(name: string): string | undefined } };
  details?: { error?: { code?: unknown; innererror?: { code?: unknown }; innerError?: { code?: unknown } } };
}

/**
 * Maps an Azure SDK error (RestError, identity errors, network and TLS
 * failures) to a gateway error. The service's message stays in `cause`.
 */
export function classify(err: unknown, op: AzureOp): KmsError {
  const e = (typeof err === 'object' && err !== null ? err : {}) as RestLike;
  const status = typeof e.statusCode === 'number' ? e.statusCode : undefined;
  const name = typeof e.name === 'string' ? e.name : '';
  const code = typeof e.code === 'string' ? e.code : '';
  const inner = e.details?.error?.innererror?.code ?? e.details?.error?.innerError?.code;
  // Key Vault sends Retry-After with 429 (and may with 503): the guard waits that long before trying again.
  const after =
    status === 429 || (status !== undefined && status >= 500) ? retryAfterMs(e.response?.headers?.get?.('retry-after')) : undefined;
  const fail = (gw: KmsError['code'], text: string) =>
    new KmsError(gw, `Azure Key Vault: ${text}`, { cause: err, ...(after !== undefined ? { retryAfterMs: after } : {}) });

  if (name === 'AbortError') return fail('KMS_UNAVAILABLE', 'request was cut off by its deadline');
  if (name === 'CredentialUnavailableError' || name === 'AuthenticationError' || name === 'AggregateAuthenticationError') {
    return fail('KMS_DENIED', 'no usable Azure credential');
  }
  if (status === 403 && inner === 'KeyDisabled') return fail('KMS_DENIED', 'the key is disabled');
  if (status === 401 || status === 403) return fail('KMS_DENIED', 'access to the key was denied');
  if (status === 404) return fail('KMS_DENIED', 'the key or key version was not found');
  if (status === 429) {
    return fail(
      'THROTTLED',
      after === undefined ? 'request rate exceeded' : `request rate exceeded; retry after ${Math.ceil(after / 1000)} s`,
    );
  }
  if (status === 400) {
    return op === 'unwrap'
      ? fail('DECRYPT_FAILED', 'the wrapped key does not unwrap under this key version')
      : fail('INTERNAL', 'the request was refused as invalid');
  }
  if (status !== undefined && status >= 500) return fail('KMS_UNAVAILABLE', 'service error');
  if (TLS_CERT_ERROR_CODES.has(code)) return fail('KMS_DENIED', "the vault's TLS certificate is not trusted");
  if (NETWORK_ERROR_CODES.has(code) || name === 'TimeoutError' || code === 'REQUEST_SEND_ERROR') {
    return fail('KMS_UNAVAILABLE', 'vault unreachable');
  }
  return fail('INTERNAL', 'unexpected error');
}
