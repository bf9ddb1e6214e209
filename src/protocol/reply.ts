import type { ErrorCode } from './errors.js';

/** `OK <payload>` (or bare `OK`), without the LF. */
export function formatOk(payload?: string): string {
  return payload === undefined || payload === '' ? 'OK' : `OK ${payload}`;
}

// A reply is one line: anything that could break the framing is replaced.
const UNSAFE_TEXT_RE = /[^\x20-\x7e]/g;

/** `ERR <CODE> <text>`, without the LF. */
export function formatError(code: ErrorCode, text: string): string {
  return `ERR ${code} ${text.replace(UNSAFE_TEXT_RE, '?') || 'error'}`;
}
