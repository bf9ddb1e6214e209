import { pino, type Logger, type DestinationStream } from 'pino';

/**
 * Structured JSON logs. Callers log ids, versions, codes and timings only:
 * never key material, payloads or raw SDK errors that might echo them.
 */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { service: 'kmsgw' }, timestamp: pino.stdTimeFunctions.isoTime }, destination ?? pino.destination(2));
}

export type { Logger };
