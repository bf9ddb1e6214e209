/**
 * Lean closed-loop load generator over a Unix socket: `conns` connections,
 * each keeping `depth` requests outstanding. Replies are only counted (LF scan
 * in a reused read buffer); each reply's first byte must be `O` (OK), anything
 * else counts as an error. Latency is hrtime at the reply's arrival minus
 * hrtime just before the request's write (one hrtime per socket event, shared
 * by the requests of that event).
 */
import { connect, type Socket } from 'node:net';

export interface LoadSpec {
  readonly socketPath: string;
  readonly conns: number;
  readonly depth: number;
  /** One request line, LF included. */
  readonly request: Buffer;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Server CPU time so far in µs, sampled at the start and end of the measured window. */
  readonly serverCpu?: () => Promise<number>;
}

export interface LoadResult {
  readonly ops: number;
  readonly seconds: number;
  readonly opsPerSec: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly errors: number;
  /** Server CPU (user + system) per request in µs, and its share of one core, when `serverCpu` was given. */
  readonly serverCpuUsPerOp?: number;
  readonly serverBusy?: number;
}

const LF = 0x0a;
const O = 0x4f;

class Latencies {
  data = new Float64Array(1 << 20);
  length = 0;
  push(ns: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = ns;
  }
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] as number;
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const { conns, depth, request } = spec;
  const reqLen = request.length;
  const batch = Buffer.alloc(reqLen * depth);
  for (let i = 0; i < depth; i++) request.copy(batch, i * reqLen);

  const lat = new Latencies();
  let ops = 0;
  let errors = 0;
  let measuring = false;
  let stopped = false;
  let open = conns;
  let measureStart = 0n;

  // Connect all first, then start the clock.
  const sockets: Socket[] = [];
  const starters: Array<() => void> = [];
  let finish!: () => void;
  const done = new Promise<void>((resolve) => (finish = resolve));

  await Promise.all(
    Array.from({ length: conns }, () => {
      return new Promise<void>((resolve, reject) => {
        const sent = new BigInt64Array(depth); // ring of send times
        let head = 0; // oldest outstanding
        let tail = 0; // next free slot
        let outstanding = 0;
        let atLineStart = true;

        const sendN = (n: number, now: bigint): void => {
          for (let k = 0; k < n; k++) {
            sent[tail] = now;
            tail = tail + 1 === depth ? 0 : tail + 1;
          }
          outstanding += n;
          socket.write(n === depth ? batch : batch.subarray(0, n * reqLen));
        };

        const onread = (nread: number, buf: Buffer): boolean => {
          const now = process.hrtime.bigint();
          let completed = 0;
          let pos = 0;
          while (pos < nread) {
            if (atLineStart && buf[pos] !== O) errors++;
            const lf = buf.indexOf(LF, pos);
            if (lf === -1 || lf >= nread) {
              atLineStart = false;
              break;
            }
            atLineStart = true;
            pos = lf + 1;
            completed++;
            const t = sent[head] as bigint;
            head = head + 1 === depth ? 0 : head + 1;
            if (measuring && t >= measureStart) {
              ops++;
              lat.push(Number(now - t));
            }
          }
          outstanding -= completed;
          if (!stopped) {
            if (completed > 0) sendN(completed, process.hrtime.bigint());
          } else if (outstanding === 0) {
            socket.end();
          }
          return true;
        };

        const socket = connect({ path: spec.socketPath, onread: { buffer: Buffer.allocUnsafe(256 * 1024), callback: onread } });
        socket.on('error', reject);
        socket.once('connect', () => {
          socket.setNoDelay(true);
          sockets.push(socket);
          starters.push(() => sendN(depth, process.hrtime.bigint()));
          resolve();
        });
        socket.on('close', () => {
          if (--open === 0) finish();
        });
      });
    }),
  );

  for (const start of starters) start();
  await sleep(spec.warmupMs);
  const cpuStart = spec.serverCpu?.();
  measureStart = process.hrtime.bigint();
  measuring = true;
  await sleep(spec.durationMs);
  const cpuEnd = spec.serverCpu?.();
  const measureEnd = process.hrtime.bigint();
  measuring = false;
  stopped = true;
  const counted = ops;
  // Drain what is outstanding, then the sockets close themselves.
  const guard = setTimeout(() => {
    for (const s of sockets) s.destroy();
  }, 5000);
  await done;
  clearTimeout(guard);

  const sorted = lat.data.slice(0, lat.length).sort();
  const seconds = Number(measureEnd - measureStart) / 1e9;
  const cpuUs = cpuStart && cpuEnd ? (await cpuEnd) - (await cpuStart) : undefined;
  return {
    ...(cpuUs === undefined ? {} : { serverCpuUsPerOp: cpuUs / counted, serverBusy: cpuUs / 1e6 / seconds }),
    ops: counted,
    seconds,
    opsPerSec: counted / seconds,
    p50Us: percentile(sorted, 0.5) / 1000,
    p99Us: percentile(sorted, 0.99) / 1000,
    errors,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
