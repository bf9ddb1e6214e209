import { toGatewayError, type ErrorCode } from './errors.js';

/**
 * What executing one request gave, as a value: it becomes protocol text only
 * at the connection (`formatReply`), and the audit record reads `code` from
 * here, never from the text.
 */
export type Outcome = { readonly ok: true; readonly payload: string } | Failure;

/** A refusal or an error, with its code: the same for every kind of caller. */
export interface Failure {
  readonly ok: false;
  readonly code: ErrorCode;
  readonly text: string;
}

/** A typed result for callers that are not the line protocol (the Vault front door's KV v2). */
export type Result<T> = { readonly ok: true; readonly value: T } | Failure;

/** Synchronous when served from memory (a cached DEK); a promise when the KMS or the disk is involved. */
export type Reply = Outcome | Promise<Outcome>;

/** `OK <payload>`; an empty payload is a bare `OK`. */
export function success(payload = ''): Outcome {
  return { ok: true, payload };
}

export function failure(code: ErrorCode, text: string): Failure {
  return { ok: false, code, text };
}

/** The outcome for anything thrown: a `GatewayError`'s code and safe message, else `INTERNAL`. */
export function failureFrom(err: unknown): Failure {
  const error = toGatewayError(err);
  return { ok: false, code: error.code, text: error.message };
}

/** The reply line for an outcome, without the LF. */
export function formatReply(outcome: Outcome): string {
  if (outcome.ok) return outcome.payload === '' ? 'OK' : `OK ${outcome.payload}`;
  return formatError(outcome.code, outcome.text);
}

// A reply is one line: anything that could break the framing is replaced.
const UNSAFE_TEXT_RE = /[^\x20-\x7e]/g;

/** `ERR <CODE> <text>`, without the LF. */
export function formatError(code: ErrorCode, text: string): string {
  return `ERR ${code} ${text.replace(UNSAFE_TEXT_RE, '?') || 'error'}`;
}
