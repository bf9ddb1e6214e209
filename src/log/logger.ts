import { createRequire } from 'node:module';
import { isatty } from 'node:tty';
import { pino, type Logger, type DestinationStream } from 'pino';

/** `log.format`: one JSON object a line, or pino-pretty's human-readable lines. */
export type LogFormat = 'json' | 'pretty';

/** What `createLogger` needs: the `log` section of the config. */
export interface LogSettings {
  readonly level: string;
  /** Absent: `pretty` when stderr is a terminal, else `json` (journald and collectors get JSON). */
  readonly format?: LogFormat | undefined;
}

/** The format in effect for `settings` on this process's stderr. */
export function resolveLogFormat(format: LogFormat | undefined, stderrIsTty: boolean = isatty(2)): LogFormat {
  return format ?? (stderrIsTty ? 'pretty' : 'json');
}

type Prettify = (line: string) => string;

/** pino-pretty, loaded only when a logger is pretty: JSON logging never loads it. */
function loadPrettifier(colorize: boolean): Prettify {
  const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as {
    prettyFactory: (options: Record<string, unknown>) => Prettify;
  };
  return prettyFactory({ colorize, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' });
}

/**
 * Where the gateway's own logger writes: fd 2, synchronously (a SonicBoom with `sync: true`),
 * as JSON or prettified in this thread (pino-pretty's `prettyFactory`, not its worker-thread
 * transport), so no line is lost when the process exits right after logging it. The format
 * can be switched while running (reload).
 */
class SwitchableDestination implements DestinationStream {
  private readonly out = pino.destination({ dest: 2, sync: true });
  private prettify: Prettify | undefined;

  constructor(format: LogFormat) {
    this.setFormat(format);
  }

  get format(): LogFormat {
    return this.prettify ? 'pretty' : 'json';
  }

  setFormat(format: LogFormat): void {
    if (format === this.format) return;
    this.prettify = format === 'pretty' ? loadPrettifier(isatty(2)) : undefined;
  }

  write(line: string): void {
    this.out.write(this.prettify ? this.prettify(line) : line);
  }

  flushSync(): void {
    this.out.flushSync();
  }
}

const destinations = new WeakMap<Logger, SwitchableDestination>();

/**
 * Structured logs (docs/operations.md, "Logs"). Callers log ids, versions, codes and timings
 * only: never key material, payloads or raw SDK errors that might echo them. With a
 * `destination`, lines go there as JSON (tests) and the format cannot be changed later.
 */
export function createLogger(settings: LogSettings | string, destination?: DestinationStream): Logger {
  const { level, format } = typeof settings === 'string' ? { level: settings, format: undefined } : settings;
  const options = { level, base: { service: 'kmsgw' }, timestamp: pino.stdTimeFunctions.isoTime };
  if (destination) return pino(options, destination);
  const own = new SwitchableDestination(resolveLogFormat(format));
  const log = pino(options, own);
  destinations.set(log, own);
  return log;
}

/**
 * Applies a new `log` section to a logger made by `createLogger`: the level always, the format
 * when the logger writes to stderr itself. Returns the fields that took effect.
 */
export function reconfigureLogger(log: Logger, settings: LogSettings): Array<'log.level' | 'log.format'> {
  const changed: Array<'log.level' | 'log.format'> = [];
  if (log.level !== settings.level) {
    log.level = settings.level;
    changed.push('log.level');
  }
  const own = destinations.get(log);
  const format = resolveLogFormat(settings.format);
  if (own && own.format !== format) {
    own.setFormat(format);
    changed.push('log.format');
  }
  return changed;
}

/** Whether `reconfigureLogger` can change this logger's format (false for a logger given a destination). */
export function canChangeFormat(log: Logger): boolean {
  return destinations.has(log);
}

export type { Logger };
