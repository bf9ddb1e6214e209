/**
 * Vault's error shape: `{"errors":[...]}` with Vault's status codes, so KV v2 and Transit clients
 * (pg_tde's curl calls, hvac) read kmsgw's failures as they read Vault's. The texts are fixed or
 * kmsgw's own `GatewayError` texts: never a secret, a token or a raw SDK message.
 */
import { randomUUID } from 'node:crypto';
import type { ErrorCode } from '../protocol/errors.js';

export interface VaultReply {
  readonly status: number;
  readonly body: unknown;
}

export function vaultError(status: number, ...errors: string[]): VaultReply {
  return { status, body: { errors } };
}

/** A 200 in Vault's response envelope (hvac and the Vault CLI read `data`; the rest is as Vault sends it). */
export function vaultData(data: unknown): VaultReply {
  return {
    status: 200,
    body: {
      request_id: randomUUID(),
      lease_id: '',
      renewable: false,
      lease_duration: 0,
      data,
      wrap_info: null,
      warnings: null,
      auth: null,
    },
  };
}

/** Vault's status for each kmsgw error code. */
export const STATUS_OF: Readonly<Record<ErrorCode, number>> = {
  BAD_REQUEST: 400,
  UNKNOWN_VERB: 405,
  TOO_LARGE: 413,
  NOT_FOUND: 404,
  EXISTS: 400,
  FORBIDDEN: 403,
  DECRYPT_FAILED: 400,
  KMS_DENIED: 503,
  KMS_UNAVAILABLE: 503,
  THROTTLED: 429,
  STORE_UNAVAILABLE: 503,
  INTERNAL: 500,
};

/** A kmsgw failure as Vault would answer it. */
export function fromGateway(code: ErrorCode, text: string): VaultReply {
  return vaultError(STATUS_OF[code], `${code.toLowerCase()}: ${text}`);
}

/** The kmsgw code a Vault status stands for in the audit log, for replies made without a kmsgw code. */
export const CODE_OF: Readonly<Record<number, ErrorCode>> = {
  400: 'BAD_REQUEST',
  403: 'FORBIDDEN',
  404: 'NOT_FOUND',
  405: 'UNKNOWN_VERB',
  413: 'TOO_LARGE',
};

/** The first error text of a Vault-shaped error reply, or its status. */
export function errorText(reply: VaultReply): string {
  const errors = (reply.body as { errors?: unknown } | null)?.errors;
  return Array.isArray(errors) && typeof errors[0] === 'string' ? errors[0] : `HTTP ${reply.status}`;
}
