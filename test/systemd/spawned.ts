import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { onTestFinished } from 'vitest';

const BIN = resolve(import.meta.dirname, '../../bin/kmsgw.js');
const LISTENER = resolve(import.meta.dirname, 'notify-listener.py');

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

/** A NOTIFY_SOCKET opened by the test (a Python datagram socket); `messages` are the datagrams received. */
export async function notifySocket(dir: string): Promise<{ path: string; messages: Lines }> {
  const path = join(dir, 'notify.sock');
  const child = spawn('python3', ['-u', LISTENER, path], { stdio: ['pipe', 'pipe', 'inherit'] });
  onTestFinished(() => void child.stdin?.end());
  const messages = new Lines();
  const out = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  let listening: () => void;
  const ready = new Promise<void>((r) => (listening = r));
  out.on('line', (line) => (line === 'LISTENING' ? listening() : messages.push(JSON.parse(line) as string)));
  await Promise.race([ready, once(child, 'exit').then(() => Promise.reject(new Error('notify listener exited')))]);
  return { path, messages };
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
