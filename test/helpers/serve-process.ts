// A `kmsgw serve` child process, as systemd or an operator runs it, with its log lines as they come.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { onTestFinished } from 'vitest';

const BIN = resolve(import.meta.dirname, '../../bin/kmsgw.js');

/** Lines that arrive over time, and a way to wait for the next one that matches. */
export class Lines {
  readonly all: string[] = [];
  private waiters: Array<{ match: (line: string) => boolean; resolve: (line: string) => void }> = [];

  push(line: string): void {
    this.all.push(line);
    for (const w of [...this.waiters]) {
      if (w.match(line)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  }

  /** Resolves with the first line, from index `from` on, that matches (failing after `timeoutMs`). */
  waitFor(match: (line: string) => boolean, what: string, from = 0, timeoutMs = 20_000): Promise<string> {
    const seen = this.all.slice(from).find(match);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms; got:\n${this.all.join('\n')}`)), timeoutMs);
      this.waiters.push({
        match,
        resolve: (line) => {
          clearTimeout(timer);
          resolve(line);
        },
      });
    });
  }
}

export interface Served {
  readonly child: ChildProcess;
  /** stderr lines (the gateway's log). */
  readonly log: Lines;
  /** Parsed JSON log lines (json format only). */
  records(): Array<Record<string, unknown>>;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(): Promise<number | null>;
}

/** Runs `kmsgw serve --config <config>` as a child process with `env` added. */
export function serveProcess(config: string, env: NodeJS.ProcessEnv = {}): Served {
  const child = spawn(process.execPath, [BIN, 'serve', '--config', config], {
    env: { ...process.env, KMSGW_SOCKET: '', KMSGW_LOG_FORMAT: '', NOTIFY_SOCKET: '', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const log = new Lines();
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (l) => log.push(l));
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  onTestFinished(() => void (child.exitCode === null && child.kill('SIGKILL')));
  return {
    child,
    log,
    records: () =>
      log.all.flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return [];
        }
      }),
    stop: () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}
