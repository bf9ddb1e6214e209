import { KmsgwError } from '../client/index.js';

/** Exit statuses and the errors that choose them; shared by every command. */

/** Exit statuses: 0 success, 1 the gateway said ERR (or was unreachable), 2 usage error. */
export const EXIT_ERR = 1;
export const EXIT_USAGE = 2;
/**
 * `dec --restore`: any failure but a missing input file. PostgreSQL reads a
 * restore_command status above 125 as fatal and stops recovery; 1 would mean
 * "not in the archive" and end recovery early, silently, on tampering or an outage.
 */
export const EXIT_RESTORE_FATAL = 255;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The command printed its own verdict; only the exit status (1) is left to give. */
export class AlreadyReported extends Error {
  override readonly name = 'AlreadyReported';
}

/** A failure that must stop PostgreSQL's recovery (see EXIT_RESTORE_FATAL). */
export class FatalForRestore extends Error {
  override readonly name = 'FatalForRestore';
}

/** The one line a failure prints, without repeating a Node error code already in the message. */
export function describeError(err: unknown): string {
  if (err instanceof KmsgwError) return `${err.code} ${err.message}`;
  const e = err as NodeJS.ErrnoException;
  const message = e?.message ?? String(err);
  if (e?.code === 'ENOENT' && typeof e.path === 'string') return `NOT_FOUND no such file ${e.path}`;
  return e?.code && !message.startsWith(e.code) ? `${e.code} ${message}` : message;
}
