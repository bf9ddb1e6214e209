/**
 * What the metrics cost on a cached GET, measured in the same run: a gateway with request and KMS
 * metrics on (the default, `ops.metrics: true`) against one with them off (`ops.metrics: false`),
 * over the Unix socket (two server children, alternating round after round) and in process (two
 * gateways in one child, `session.handle("GET bench/key")` + `formatReply`, alternating).
 */
import { formatReply } from '../src/protocol/reply.js';
import type { RunningGateway } from '../src/serve.js';
import { BENCH_KEY, max, median, min, type MetricsAbInProcess } from './common.js';
import type { LoadResult } from './load.js';

let sink = 0;
const VARIANTS = 16;

/**
 * Calls `fn` for `ms` milliseconds; returns calls per second of this process's CPU time (user +
 * system), so time the process spends descheduled on a busy machine does not count.
 */
function timedCpu(fn: (i: number) => void, ms: number): number {
  const cpu0 = process.cpuUsage();
  const end = performance.now() + ms;
  let n = 0;
  do {
    for (let k = 0; k < 1024; k++) fn(n++);
  } while (performance.now() < end);
  const cpu = process.cpuUsage(cpu0);
  return n / ((cpu.user + cpu.system) / 1e6);
}

/** In-process cached GET, metrics on vs off, alternating; ops/s per round. */
export async function runInProcessGetAb(on: RunningGateway, off: RunningGateway, rounds: number, ms: number): Promise<MetricsAbInProcess> {
  // Built through a Buffer so the strings are flat and not internalized, as a framer's output is.
  const lines = Array.from({ length: VARIANTS }, () => Buffer.from(`GET ${BENCH_KEY}`, 'latin1').toString('latin1'));
  const loop = (gateway: RunningGateway) => {
    const session = gateway.pipeline.open({ transport: 'internal' });
    const first = session.handle(lines[0] as string);
    if (first instanceof Promise || !first.ok) throw new Error('in-process GET was not a synchronous cache hit');
    return (i: number): void => {
      const reply = session.handle(lines[i & (VARIANTS - 1)] as string);
      if (reply instanceof Promise) throw new Error('in-process GET went to the KMS');
      sink += formatReply(reply).length;
    };
  };
  const getOn = loop(on);
  const getOff = loop(off);
  timedCpu(getOn, ms);
  timedCpu(getOff, ms);
  const result: MetricsAbInProcess = { onOps: [], offOps: [] };
  for (let r = 0; r < rounds; r++) {
    // Which goes first alternates, so neither always runs on a warmer (or more throttled) core.
    if (r % 2 === 0) {
      result.onOps.push(timedCpu(getOn, ms));
      result.offOps.push(timedCpu(getOff, ms));
    } else {
      result.offOps.push(timedCpu(getOff, ms));
      result.onOps.push(timedCpu(getOn, ms));
    }
    // Let the event loop turn (timers, the metrics' event-loop monitor), as a server's does.
    await new Promise<void>((done) => setImmediate(done));
  }
  if (sink === 0) console.error('unexpected: empty sink');
  return result;
}

/** Socket measurements of one workload, metrics on and off, round by round. */
export interface MetricsAbSocket {
  readonly label: string;
  readonly on: LoadResult[];
  readonly off: LoadResult[];
}

const rate = (n: number): string => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : `${(n / 1e3).toFixed(1)} k`);
const ratio = (v: readonly number[]): string => `**${median(v).toFixed(3)}x** (${min(v).toFixed(3)}–${max(v).toFixed(3)})`;

/** The report section and its JSON summary. */
export function metricsAbReport(
  socket: readonly MetricsAbSocket[],
  inProcess: MetricsAbInProcess | undefined,
): { lines: string[]; summary: unknown } {
  const lines = [
    '### Metrics on vs off (cached GET, same run)',
    '',
    'Ratio = gateway with `ops.metrics: true` (the default: requests counted by verb and code, latency histogram) ÷ the same gateway ' +
      'with `ops.metrics: false`, measured alternately (which goes first alternates) in many short rounds; 1.00x = no cost. ' +
      "Socket rows: requests per second of wall time; in process: calls per second of the process's CPU time. Medians over rounds; ranges are min–max.",
    '',
    '| Workload | metrics on | metrics off | on ÷ off | p50 / p99 µs on | p50 / p99 µs off | server CPU µs/req on / off |',
    '|---|---:|---:|---:|---:|---:|---:|',
  ];
  const summary: Record<string, unknown> = {};
  for (const s of socket) {
    const ratios = s.on.map((r, i) => r.opsPerSec / (s.off[i] as LoadResult).opsPerSec);
    const on = (f: (r: LoadResult) => number): number => median(s.on.map(f));
    const off = (f: (r: LoadResult) => number): number => median(s.off.map(f));
    lines.push(
      `| ${s.label} (socket) | ${rate(on((r) => r.opsPerSec))} req/s | ${rate(off((r) => r.opsPerSec))} req/s | ${ratio(ratios)} | ` +
        `${on((r) => r.p50Us).toFixed(1)} / ${on((r) => r.p99Us).toFixed(1)} | ${off((r) => r.p50Us).toFixed(1)} / ${off((r) => r.p99Us).toFixed(1)} | ` +
        `${on((r) => r.serverCpuUsPerOp ?? Number.NaN).toFixed(2)} / ${off((r) => r.serverCpuUsPerOp ?? Number.NaN).toFixed(2)} |`,
    );
    summary[s.label] = { ratio: { median: median(ratios), min: min(ratios), max: max(ratios), rounds: ratios }, on: s.on, off: s.off };
  }
  if (inProcess !== undefined) {
    const ratios = inProcess.onOps.map((v, i) => v / (inProcess.offOps[i] as number));
    lines.push(
      `| GET in process (\`session.handle\` + \`formatReply\`) | ${rate(median(inProcess.onOps))} per CPU s | ${rate(median(inProcess.offOps))} per CPU s | ` +
        `${ratio(ratios)} | — | — | — |`,
    );
    summary['in-process'] = { ratio: { median: median(ratios), min: min(ratios), max: max(ratios), rounds: ratios }, ...inProcess };
  }
  return { lines, summary };
}
