/**
 * Load helpers for test/security/limits.test.ts: a flooding client in its own process
 * (so its buffers never count in the server's RSS) and a sampler of the server's memory
 * and `listener.stats()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Listener } from '../../src/server/listener.js';

/** What the flooding child reports (every 50 ms and on close). */
export interface FloodReport {
  /** Bytes handed to socket.write (ignoring backpressure). */
  readonly offered: number;
  /** Bytes the kernel took (bytesWritten less what is still queued in the child). */
  readonly flushed: number;
  /** Reply lines received (0 when the child does not read). */
  readonly lines: number;
  /** Time of the first reply byte (ms since epoch), 0 before any. */
  readonly firstReplyAt: number;
  readonly closed: boolean;
}

// Plain CommonJS for `node -e`: connect, write `total` bytes of `line\n` repeated without
// waiting for drain, read (counting LFs) or never read, and report as JSON lines.
const FLOOD_SCRIPT = String.raw`
const net = require('node:net');
const [path, line, totalText, readText] = process.argv.slice(1);
const total = Number(totalText);
const s = net.connect(path);
let offered = 0, lines = 0, firstReplyAt = 0, closed = false;
const report = () => process.stdout.write(JSON.stringify({ offered, flushed: s.bytesWritten - s.writableLength, lines, firstReplyAt, closed }) + '\n');
s.on('error', () => undefined);
s.on('close', () => { closed = true; report(); process.exit(0); });
if (readText === '1') {
  s.on('data', (d) => { if (!firstReplyAt) firstReplyAt = Date.now(); for (let i = 0; i < d.length; i++) if (d[i] === 10) lines++; });
} else {
  s.pause();
}
s.on('connect', () => {
  const unit = Buffer.from((line + '\n').repeat(Math.max(1, Math.floor(65536 / (line.length + 1)))), 'latin1');
  while (offered < total) { s.write(unit); offered += unit.length; }
  report();
});
setInterval(report, 50);
`;

export interface Flood {
  readonly child: ChildProcess;
  /** The latest report. */
  last(): FloodReport;
  /** Resolves with the first report that satisfies `pred`, or rejects after `timeoutMs`. */
  until(pred: (r: FloodReport) => boolean, timeoutMs: number): Promise<FloodReport>;
  /** Kills the child (by its pid) and waits for it to exit. */
  stop(): Promise<void>;
}

/** Starts a child that writes `totalBytes` of `line` + LF to `socketPath`, reading replies or not. */
export function startFlood(socketPath: string, line: string, totalBytes: number, read: boolean): Flood {
  const child = spawn(process.execPath, ['-e', FLOOD_SCRIPT, socketPath, line, String(totalBytes), read ? '1' : '0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let latest: FloodReport = { offered: 0, flushed: 0, lines: 0, firstReplyAt: 0, closed: false };
  const waiters = new Set<() => void>();
  let buffered = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    buffered += chunk;
    let lf: number;
    while ((lf = buffered.indexOf('\n')) !== -1) {
      latest = JSON.parse(buffered.slice(0, lf)) as FloodReport;
      buffered = buffered.slice(lf + 1);
    }
    for (const w of waiters) w();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    last: () => latest,
    until: (pred, timeoutMs) =>
      new Promise<FloodReport>((resolve, reject) => {
        const check = () => {
          if (pred(latest)) {
            clearTimeout(timer);
            waiters.delete(check);
            resolve(latest);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`flood client: condition not met within ${timeoutMs} ms; last report ${JSON.stringify(latest)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** Peaks of the server's RSS and listener counters, sampled every 10 ms. */
export interface Peaks {
  heapBefore: number;
  heapMax: number;
  heapAfter: number;
  rssBefore: number;
  rssMax: number;
  rssAfter: number;
  bytesRead: number;
  bytesQueued: number;
  connections: number;
}

export function sample(listener: Listener): { peaks: Peaks; stop(): Peaks } {
  const { rss, heapUsed } = process.memoryUsage();
  const peaks: Peaks = {
    heapBefore: heapUsed,
    heapMax: heapUsed,
    heapAfter: heapUsed,
    rssBefore: rss,
    rssMax: rss,
    rssAfter: rss,
    bytesRead: 0,
    bytesQueued: 0,
    connections: 0,
  };
  const tick = () => {
    const s = listener.stats();
    peaks.bytesRead = Math.max(peaks.bytesRead, s.bytesRead);
    peaks.bytesQueued = Math.max(peaks.bytesQueued, s.bytesQueued);
    peaks.connections = Math.max(peaks.connections, s.connections);
    const m = process.memoryUsage();
    peaks.rssMax = Math.max(peaks.rssMax, m.rss);
    peaks.heapMax = Math.max(peaks.heapMax, m.heapUsed);
  };
  const timer = setInterval(tick, 10);
  return {
    peaks,
    stop() {
      tick();
      clearInterval(timer);
      const m = process.memoryUsage();
      peaks.rssAfter = m.rss;
      peaks.heapAfter = m.heapUsed;
      return peaks;
    },
  };
}

export const MiB = 1024 * 1024;
export const mib = (n: number) => (n / MiB).toFixed(1);
export const kib = (n: number) => (n / 1024).toFixed(0);

/** `rss 80.1 -> 82.3 MiB (peak 85.0), heap used 20.0 -> 21.0 MiB (peak 30.0)`. */
export function rssText(p: Peaks): string {
  return (
    `rss ${mib(p.rssBefore)} -> ${mib(p.rssAfter)} MiB (peak ${mib(p.rssMax)}), ` +
    `heap used ${mib(p.heapBefore)} -> ${mib(p.heapAfter)} MiB (peak ${mib(p.heapMax)})`
  );
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolves with the time it took for `promise`, or rejects after `timeoutMs`. */
export async function within(promise: Promise<unknown>, timeoutMs: number, what: string): Promise<number> {
  const started = performance.now();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
  return performance.now() - started;
}
