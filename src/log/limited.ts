import type { Logger } from './logger.js';

/**
 * Warnings that a client can trigger at will (a refused connection, a connection cut
 * for buffering too much) are logged at most once per interval and kind, with the
 * number held back since, so a flood of them cannot flood the log.
 */
export class LimitedWarnings {
  private readonly last = new Map<string, { at: number; held: number }>();

  /**
   * @param intervalMs shortest time between two warnings of one kind. @default 10000
   * @param now clock in ms (tests inject one). @default Date.now
   */
  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  warn(kind: string, fields: Record<string, unknown>, message: string): void {
    const t = this.now();
    const seen = this.last.get(kind);
    if (seen !== undefined && t - seen.at < this.intervalMs) {
      seen.held++;
      return;
    }
    this.log.warn({ ...fields, ...(seen && seen.held > 0 ? { suppressed: seen.held } : {}) }, message);
    this.last.set(kind, { at: t, held: 0 });
  }
}
