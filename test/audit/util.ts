import { readFile, writeFile } from 'node:fs/promises';
import { pino, type Logger } from 'pino';
import { openAuditFile, type AuditFile } from '../../src/audit/file.js';
import { AuditLog, type AuditLogOptions } from '../../src/audit/log.js';
import type { RequestRecord } from '../../src/request/context.js';

export interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** A pino logger whose lines are kept, parsed, for assertions. */
export function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
  return { logger, lines };
}

/** A request record as the gateway would produce it. */
export function rec(i: number, extra: Partial<RequestRecord> = {}): RequestRecord {
  return {
    time: `2026-11-27T12:00:${String(i % 60).padStart(2, '0')}.000Z`,
    client: 'uid:1000',
    verb: 'GET',
    keyId: `app/k${i}`,
    version: 1,
    outcome: 'OK',
    latencyMs: 0.05,
    ...extra,
  };
}

/** Lets setImmediate callbacks and settled I/O run: a yield, not a sleep. */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export interface Deferred {
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

export function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}

/** What a spy file saw, in order. */
export type Call = 'append' | 'sync' | 'close';

/**
 * An `openFile` that wraps the real file: records every call, and lets a test fail or
 * hold an append or a sync (`hooks` is consulted on each call).
 */
export function spyOpen(
  calls: Call[],
  hooks: { append?: () => Promise<void> | void; sync?: () => Promise<void> | void } = {},
): (path: string, mode: number) => Promise<AuditFile> {
  return async (path, mode) => {
    const real = await openAuditFile(path, mode);
    return {
      async append(data) {
        calls.push('append');
        await hooks.append?.();
        await real.append(data);
      },
      async sync() {
        calls.push('sync');
        await hooks.sync?.();
        await real.sync();
      },
      async close() {
        calls.push('close');
        await real.close();
      },
    };
  };
}

/** Opens a log, records `n` records, closes it. */
export async function writeRecords(file: string, n: number, options: Partial<AuditLogOptions> = {}, from = 1): Promise<void> {
  const log = await AuditLog.open({ file, logger: captureLogger().logger, fsync: 'never', ...options });
  for (let i = from; i < from + n; i++) log.record(rec(i));
  await log.close();
}

/** The file's lines (without LFs; no entry after a final LF). */
export async function fileLines(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8');
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

export async function writeLines(file: string, lines: readonly string[]): Promise<void> {
  await writeFile(file, lines.map((l) => `${l}\n`).join(''));
}
