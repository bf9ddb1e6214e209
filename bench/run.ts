/**
 * kmsgw benchmark: `npm run bench` (or `node dist/bench/run.js [options]`).
 *
 * Socket part: cached GET (and ENC 32 B) over a Unix socket against the real
 * gateway and against a bare Node server that answers every line with a fixed
 * 45-byte line. Both servers run in child processes (so this load generator
 * does not share their event loop) and are measured alternately, gateway then
 * bare, round after round; ratios are gateway / bare of the same round.
 *
 * Metrics A/B: cached GET with request metrics on (the default) and off (`ops.metrics: false`)
 * in the same run: over the socket (two gateway children, alternating) and in process (two
 * gateways in one child); printed as on ÷ off (bench/metrics-ab.ts). --no-metrics-ab skips it.
 *
 * In-process part: ENC 32 B and 64 KiB through a pipeline session (handle + formatReply) and seal()
 * against Node's own AES-256-GCM calls, in a child of its own.
 *
 * Options: --rounds N (default 5, min 5), --duration MS per measurement
 * (default 1500), --enc-duration MS (default 500), --json FILE (also write the
 * raw JSON there), --profile DIR (run the gateway child under --cpu-prof;
 * --profile-role bare|both for the bare server too),
 * --only ID[,ID] (socket workloads to run: get-serial, get-pipelined,
 * get-16conns, enc32-pipelined), --no-enc (skip the in-process part).
 *
 * Start-up part (startup.ts): the real CLI from spawn to PONG with an empty store and with
 * N keys, file store and S3 on LocalStack, alternating; RSS and cold GETs with N keys.
 * Options: --no-startup (skip it), --startup-only (only it), --startup-keys N (default
 * 100000), --startup-gets N (cold GETs after each N-key start, default 1000),
 * --startup-rounds N (default 10, min 5). LocalStack:
 * the one on 127.0.0.1:$KMSGW_LOCALSTACK_PORT (default 4566) if it serves KMS and S3, else
 * one started for the bench and stopped after it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BENCH_KEY, max, median, min, type ChildMessage, type EncResult, type MetricsAbInProcess } from './common.js';
import { metricsAbReport, type MetricsAbSocket } from './metrics-ab.js';
import { runLoad, type LoadResult } from './load.js';
import type { ColdResult } from './cold.js';
import { ensureLocalStack, signalLocalStackSync } from './localstack.js';
import { askOnce, startNaive } from './naive.js';
import { runWalBench, walReport, type WalResult } from './wal.js';
import { killStartupProcesses, runStartupBench } from './startup.js';
import { startupReport, type StartupReport } from './startup-report.js';
import { coldReport } from './cold-report.js';

// --- options -----------------------------------------------------------------

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i === -1 ? undefined : process.argv[i + 1];
}
const ROUNDS = Math.max(5, Number(option('--rounds') ?? 5));
const DURATION_MS = Number(option('--duration') ?? 1500);
const WARMUP_MS = 200; // per measurement, before the clock starts
const ENC_DURATION_MS = Number(option('--enc-duration') ?? 500);
const JSON_FILE = option('--json');
const PROFILE_DIR = option('--profile');
/** Which server child --profile applies to: gateway (default), bare or both. */
const PROFILE_ROLE = option('--profile-role') ?? 'gateway';
/** Comma-separated workload ids to run (profiling); default all. */
const ONLY = option('--only')?.split(',');
const STARTUP_ONLY = process.argv.includes('--startup-only');
const SKIP_ENC = STARTUP_ONLY || process.argv.includes('--no-enc');
const SKIP_SOCKET = STARTUP_ONLY;
const SKIP_STARTUP = process.argv.includes('--no-startup');
const SKIP_METRICS_AB = STARTUP_ONLY || process.argv.includes('--no-metrics-ab');
const SKIP_COLD = STARTUP_ONLY || process.argv.includes('--no-cold');
const SKIP_WAL = STARTUP_ONLY || process.argv.includes('--no-wal');
/** Length of the mixed run whose RSS growth is reported (bench/cold.ts). */
const COLD_MIXED_S = Number(option('--cold-mixed-s') ?? 60);
/** The metrics A/B looks for a few percent: many short alternations, so load from elsewhere hits both sides alike. */
const AB_ROUNDS = 4 * ROUNDS;
const AB_DURATION_MS = Math.max(200, Math.round(DURATION_MS / 3));
const STARTUP_KEYS = Number(option('--startup-keys') ?? 100_000);
const STARTUP_GETS = Number(option('--startup-gets') ?? 1000);
/** Start-ups are short and noisy (a fresh process on a shared machine): more rounds than the socket part. */
const STARTUP_ROUNDS = Math.max(5, Number(option('--startup-rounds') ?? 10));
if (!(Number.isInteger(STARTUP_KEYS) && STARTUP_KEYS >= 1 && Number.isInteger(STARTUP_GETS) && STARTUP_GETS >= 1)) {
  throw new Error('--startup-keys and --startup-gets must be positive integers');
}
const LOCALSTACK_PORT = Number(process.env.KMSGW_LOCALSTACK_PORT || 4566);
const REPO_DIR = fileURLToPath(new URL('../..', import.meta.url));

const CHILD = fileURLToPath(new URL('./child.js', import.meta.url));

// --- children and cleanup ----------------------------------------------------

const tmpRoot = mkdtempSync(join(tmpdir(), 'kmsgw-bench-'));
const children = new Set<ChildProcess>();

function cleanup(): void {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
  killStartupProcesses();
  rmSync(tmpRoot, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    cleanup();
    process.exit(130);
  });
}

/** Server children: the gateway (metrics on, the default), the same with metrics off, the bare baseline. */
type ServerRole = 'gateway' | 'gateway-nometrics' | 'bare';

interface Server {
  readonly name: ServerRole;
  readonly socketPath: string;
  /** The child's CPU time so far (µs). */
  cpu(): Promise<number>;
  stop(): Promise<void>;
}

function spawnChild(args: string[], execArgv: string[] = []): { child: ChildProcess; next: () => Promise<ChildMessage> } {
  const child = fork(CHILD, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const queue: ChildMessage[] = [];
  const waiters: Array<{ resolve: (m: ChildMessage) => void; reject: (e: Error) => void }> = [];
  child.on('message', (m: ChildMessage) => {
    const w = waiters.shift();
    if (w) w.resolve(m);
    else queue.push(m);
  });
  child.once('exit', (code, signal) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`bench child ${args[0]} exited (${code ?? signal})`));
  });
  const next = (): Promise<ChildMessage> => {
    const queued = queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
  };
  return { child, next };
}

async function startServer(name: ServerRole): Promise<Server> {
  const execArgv =
    PROFILE_DIR !== undefined && (PROFILE_ROLE === name || PROFILE_ROLE === 'both')
      ? ['--cpu-prof', `--cpu-prof-dir=${resolve(PROFILE_DIR)}`, `--cpu-prof-name=${name}.cpuprofile`]
      : [];
  const { child, next } = spawnChild([name, tmpRoot], execArgv);
  const ready = await next();
  if (ready.type === 'error') throw new Error(`${name} child failed:\n${ready.message}`);
  if (ready.type !== 'ready') throw new Error(`${name} child: unexpected ${ready.type}`);
  return {
    name,
    socketPath: ready.socketPath,
    cpu: async () => {
      child.send({ type: 'cpu' });
      const m = await next();
      if (m.type !== 'cpu') throw new Error(`${name} child: expected cpu, got ${m.type}`);
      return m.us;
    },
    stop: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null || child.signalCode !== null) return done();
        child.once('exit', () => done());
        child.send({ type: 'stop' });
      }),
  };
}

async function runEncChild(): Promise<EncResult> {
  const { child, next } = spawnChild(['enc', tmpRoot, String(ROUNDS), String(ENC_DURATION_MS)]);
  const message = await next();
  await new Promise<void>((done) => (child.exitCode !== null ? done() : child.once('exit', () => done())));
  if (message.type === 'error') throw new Error(`enc child failed:\n${message.message}`);
  if (message.type !== 'enc-result') throw new Error(`enc child: unexpected ${message.type}`);
  return message.result;
}

// --- workloads ---------------------------------------------------------------

interface Mode {
  readonly id: string;
  readonly label: string;
  readonly conns: number;
  readonly depth: number;
  readonly request: Buffer;
  /** A request that depends on the server (DEC of an envelope it made); `request` is then unused. */
  readonly prepare?: (socketPath: string) => Promise<Buffer>;
}

const GET_LINE = Buffer.from(`GET ${BENCH_KEY}\n`, 'latin1');
const ENC32_LINE = Buffer.from(`ENC ${BENCH_KEY} ${Buffer.alloc(32, 0x5a).toString('base64')}\n`, 'latin1');

const ALL_MODES: Mode[] = [
  { id: 'get-serial', label: 'GET, one at a time (1 conn)', conns: 1, depth: 1, request: GET_LINE },
  { id: 'get-pipelined', label: 'GET, 64 pipelined (1 conn)', conns: 1, depth: 64, request: GET_LINE },
  { id: 'get-16conns', label: 'GET, 16 conns × 1 at a time', conns: 16, depth: 1, request: GET_LINE },
  { id: 'enc32-pipelined', label: 'ENC 32 B, 64 pipelined (1 conn)', conns: 1, depth: 64, request: ENC32_LINE },
  {
    id: 'dec32-pipelined',
    label: 'DEC 32 B, 64 pipelined (1 conn)',
    conns: 1,
    depth: 64,
    request: ENC32_LINE,
    // Each server decrypts an envelope it made itself (the bare one answers anything).
    prepare: async (socketPath) => {
      const reply = await askOnce(socketPath, ENC32_LINE.toString('latin1').trimEnd());
      const env = reply.startsWith('OK ') ? reply.slice(3) : Buffer.alloc(49).toString('base64');
      return Buffer.from(`DEC ${BENCH_KEY} ${env}\n`, 'latin1');
    },
  },
];

const MODES = ONLY === undefined ? ALL_MODES : ALL_MODES.filter((m) => ONLY.includes(m.id));

// --- stats -------------------------------------------------------------------

function fmtRate(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return n.toFixed(0);
}
const fmtRatio = (v: readonly number[]): string => `**${median(v).toFixed(2)}x** (${min(v).toFixed(2)}–${max(v).toFixed(2)})`;
const fmtUs = (v: number): string => v.toFixed(1);

// --- main --------------------------------------------------------------------

/** Socket workloads, gateway and bare server alternating, round after round. */
type SocketResults = Record<string, { gateway: LoadResult[]; bare: LoadResult[]; naive: LoadResult[] }>;

/** Socket workloads, the gateway, the bare server and the naive Python server alternating, round after round. */
async function runSocketPart(t0: number): Promise<SocketResults> {
  const gateway = await startServer('gateway');
  const bare = await startServer('bare');
  const naive = await startNaive(tmpRoot, REPO_DIR, (c) => {
    children.add(c);
    c.once('exit', () => children.delete(c));
  });
  const servers = [gateway, bare, naive];
  const socket: SocketResults = {};
  const requests = new Map<string, Buffer>();
  const requestFor = async (mode: Mode, socketPath: string): Promise<Buffer> => {
    if (mode.prepare === undefined) return mode.request;
    const key = `${mode.id} ${socketPath}`;
    if (!requests.has(key)) requests.set(key, await mode.prepare(socketPath));
    return requests.get(key) as Buffer;
  };
  try {
    // Warm-up (JIT, connection setup paths), not recorded.
    for (const mode of MODES) {
      for (const server of servers) {
        await runLoad({
          socketPath: server.socketPath,
          conns: mode.conns,
          depth: mode.depth,
          request: await requestFor(mode, server.socketPath),
          warmupMs: 100,
          durationMs: 300,
        });
      }
      socket[mode.id] = { gateway: [], bare: [], naive: [] };
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of MODES) {
        for (const server of servers) {
          const result = await runLoad({
            socketPath: server.socketPath,
            conns: mode.conns,
            depth: mode.depth,
            request: await requestFor(mode, server.socketPath),
            warmupMs: WARMUP_MS,
            durationMs: DURATION_MS,
            serverCpu: () => server.cpu(),
          });
          if (result.errors > 0) throw new Error(`${server.name} answered ${result.errors} non-OK replies in ${mode.id}`);
          socket[mode.id]?.[server.name as 'gateway' | 'bare' | 'naive'].push(result);
        }
      }
      process.stderr.write(`  round ${round + 1}/${ROUNDS} done (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
    }
  } finally {
    await Promise.all([gateway.stop(), bare.stop(), naive.stop()]);
  }
  return socket;
}

/** Cached GET over the socket with metrics on and off, alternating (which goes first alternates by round); then in process. */
async function runMetricsAbPart(t0: number): Promise<{ socket: MetricsAbSocket[]; inProcess: MetricsAbInProcess }> {
  const modes = ALL_MODES.filter((m) => m.id === 'get-serial' || m.id === 'get-pipelined');
  const on = await startServer('gateway');
  const off = await startServer('gateway-nometrics');
  const socket = modes.map((m) => ({ label: m.label, on: [] as LoadResult[], off: [] as LoadResult[] }));
  try {
    const load = (server: Server, mode: Mode, warmupMs: number, durationMs: number): Promise<LoadResult> =>
      runLoad({
        socketPath: server.socketPath,
        conns: mode.conns,
        depth: mode.depth,
        request: mode.request,
        warmupMs,
        durationMs,
        serverCpu: () => server.cpu(),
      });
    for (const mode of modes) for (const server of [on, off]) await load(server, mode, 100, 300);
    for (let round = 0; round < AB_ROUNDS; round++) {
      for (const [i, mode] of modes.entries()) {
        for (const server of round % 2 === 0 ? [on, off] : [off, on]) {
          const result = await load(server, mode, 100, AB_DURATION_MS);
          if (result.errors > 0) throw new Error(`${server.name} answered ${result.errors} non-OK replies in ${mode.id}`);
          (socket[i] as MetricsAbSocket)[server === on ? 'on' : 'off'].push(result);
        }
      }
      process.stderr.write(`  metrics A/B round ${round + 1}/${AB_ROUNDS} done (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
    }
  } finally {
    await Promise.all([on.stop(), off.stop()]);
  }
  const { child, next } = spawnChild(['get-ab', tmpRoot, String(AB_ROUNDS), String(AB_DURATION_MS / 2)]);
  const message = await next();
  await new Promise<void>((done) => (child.exitCode !== null ? done() : child.once('exit', () => done())));
  if (message.type === 'error') throw new Error(`get-ab child failed:\n${message.message}`);
  if (message.type !== 'get-ab-result') throw new Error(`get-ab child: unexpected ${message.type}`);
  return { socket, inProcess: message.result };
}

let coldLocalStack: string | undefined;
process.on('exit', () => coldLocalStack !== undefined && signalLocalStackSync(coldLocalStack));

/** Cold keys and memory against LocalStack (bench/cold.ts), in a child with --expose-gc. */
async function runColdPart(): Promise<ColdResult | { failed: string }> {
  const ls = await ensureLocalStack(REPO_DIR, LOCALSTACK_PORT, (dir) => (coldLocalStack = dir));
  if ('failed' in ls) return { failed: ls.failed };
  try {
    const { child, next } = spawnChild(['cold', tmpRoot, ls.endpoint, String(COLD_MIXED_S)], ['--expose-gc']);
    const message = await next();
    await new Promise<void>((done) => (child.exitCode !== null ? done() : child.once('exit', () => done())));
    if (message.type === 'error') throw new Error(`cold child failed:\n${message.message}`);
    if (message.type !== 'cold-result') throw new Error(`cold child: unexpected ${message.type}`);
    return message.result;
  } finally {
    await ls.stop();
  }
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const cpu = cpus();
  const loadBefore = loadavg()[0] as number;
  process.stderr.write(
    `kmsgw bench: ${SKIP_SOCKET ? 'no socket part' : `${ROUNDS} rounds × ${MODES.length} workloads × 2 servers × ${DURATION_MS} ms`}` +
      `${SKIP_ENC ? '' : ', then in-process ENC'}${SKIP_STARTUP ? '' : `, then start-up with ${STARTUP_KEYS} keys`}\n`,
  );

  const socket = SKIP_SOCKET ? {} : await runSocketPart(t0);
  const metricsAb = SKIP_METRICS_AB ? undefined : await runMetricsAbPart(t0);

  if (!SKIP_ENC) process.stderr.write('  in-process ENC...\n');
  const enc: EncResult = SKIP_ENC ? { durationMs: 0, sizes: [] } : await runEncChild();

  let startup: StartupReport | undefined;
  if (!SKIP_STARTUP) {
    process.stderr.write(`  start-up with ${STARTUP_KEYS} keys...\n`);
    const s0 = Date.now();
    const startupLoadBefore = loadavg()[0] as number;
    const result = await runStartupBench({
      repoDir: REPO_DIR,
      tmpRoot,
      keys: STARTUP_KEYS,
      rounds: STARTUP_ROUNDS,
      gets: Math.min(STARTUP_GETS, STARTUP_KEYS),
      localStackPort: LOCALSTACK_PORT,
      progress: (line) => process.stderr.write(`${line}\n`),
    });
    startup = startupReport(result, {
      before: startupLoadBefore,
      after: loadavg()[0] as number,
      elapsedS: (Date.now() - s0) / 1000,
    });
  }
  let wal: WalResult | undefined;
  if (!SKIP_WAL) {
    process.stderr.write('  WAL segment through the CLI...\n');
    const gateway = await startServer('gateway');
    try {
      wal = runWalBench(REPO_DIR, tmpRoot, gateway.socketPath, ROUNDS);
    } finally {
      await gateway.stop();
    }
  }
  if (!SKIP_COLD) process.stderr.write(`  cold keys and memory (LocalStack; mixed run ${COLD_MIXED_S} s)...\n`);
  const cold = SKIP_COLD ? undefined : await runColdPart();
  const elapsedS = (Date.now() - t0) / 1000;
  const loadAfter = loadavg()[0] as number;

  // --- report ----------------------------------------------------------------

  type Row = { workload: string; target: string; pass: boolean | undefined };
  const verdicts: Row[] = [];
  const out: string[] = [];
  out.push('## kmsgw benchmark');
  out.push('');
  out.push(
    `Node ${process.version} · ${cpu[0]?.model.trim() ?? 'unknown CPU'} · ${cpu.length} cores · ${process.platform}/${process.arch} · ` +
      [
        SKIP_SOCKET ? '' : `${ROUNDS} alternating rounds of ${DURATION_MS / 1000} s per workload (socket)`,
        SKIP_ENC ? '' : `${ROUNDS} rounds of ${ENC_DURATION_MS / 1000} s per variant (in-process)`,
        SKIP_STARTUP ? '' : `${STARTUP_ROUNDS} alternating rounds of start-ups`,
      ]
        .filter(Boolean)
        .join(' · ') +
      ' · ' +
      `bench took ${elapsedS.toFixed(0)} s · 1-min load average ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after`,
  );
  const socketSummary: Record<string, unknown> = {};
  if (!SKIP_SOCKET) {
    out.push('');
    out.push('### Over the Unix socket (cached key)');
    out.push('');
    out.push(
      'Ratio = kmsgw ÷ bare Node server in the same round (a server that splits on LF and answers each line with a fixed 45-byte line), ' +
        'and kmsgw ÷ the naive Python server (bench/naive/server.py: asyncio, `cryptography` AESGCM made per request, the same protocol v1) in the same round. ' +
        'Figures are medians over rounds; ranges are min–max.',
    );
    out.push('');
    out.push(
      '| Workload | kmsgw req/s | bare req/s | naive Python req/s | kmsgw ÷ bare | kmsgw ÷ naive | kmsgw p50 / p99 µs | bare p50 / p99 µs | server CPU µs/req kmsgw / bare | kmsgw CPU busy | Target | |',
    );
    out.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|');
    for (const mode of MODES) {
      const data = socket[mode.id] as SocketResults[string];
      const ratios = data.gateway.map((g, i) => g.opsPerSec / (data.bare[i] as LoadResult).opsPerSec);
      const vsNaive = data.gateway.map((g, i) => g.opsPerSec / (data.naive[i] as LoadResult).opsPerSec);
      const g = (f: (r: LoadResult) => number): number[] => data.gateway.map(f);
      const b = (f: (r: LoadResult) => number): number[] => data.bare.map(f);
      const gP99 = g((r) => r.p99Us);
      let target = '';
      let pass: boolean | undefined;
      // Issue 15's targets are against the naive peer; the earlier ones against the bare server stay.
      const naiveTarget = { 'get-pipelined': 4, 'get-16conns': 2.5, 'enc32-pipelined': 2, 'dec32-pipelined': 2 }[mode.id];
      if (naiveTarget !== undefined) {
        const ok = median(vsNaive) >= naiveTarget;
        verdicts.push({ workload: mode.label, target: `≥ ${naiveTarget}x naive`, pass: ok });
      }
      if (mode.id === 'get-16conns') {
        target = '≥ 0.90x bare';
        pass = median(ratios) >= 0.9;
      } else if (mode.id === 'get-pipelined') {
        target = '≥ 0.75x bare';
        pass = median(ratios) >= 0.75;
      } else if (mode.id === 'get-serial') {
        target = `p99 ≤ 55 µs (${fmtUs(min(gP99))}–${fmtUs(max(gP99))})`;
        pass = median(gP99) <= 55;
      }
      if (pass !== undefined) verdicts.push({ workload: mode.label, target, pass });
      if (naiveTarget !== undefined) {
        const ok = median(vsNaive) >= naiveTarget;
        target = target === '' ? `≥ ${naiveTarget}x naive` : `${target}; ≥ ${naiveTarget}x naive`;
        pass = pass === undefined ? ok : pass && ok;
      }
      out.push(
        `| ${mode.label} | ${fmtRate(median(g((r) => r.opsPerSec)))} | ${fmtRate(median(b((r) => r.opsPerSec)))} | ` +
          `${fmtRate(median(data.naive.map((r) => r.opsPerSec)))} | ${fmtRatio(ratios)} | ${fmtRatio(vsNaive)} | ` +
          `${fmtUs(median(g((r) => r.p50Us)))} / ${fmtUs(median(gP99))} | ${fmtUs(median(b((r) => r.p50Us)))} / ${fmtUs(median(b((r) => r.p99Us)))} | ` +
          `${median(g((r) => r.serverCpuUsPerOp ?? Number.NaN)).toFixed(2)} / ${median(b((r) => r.serverCpuUsPerOp ?? Number.NaN)).toFixed(2)} | ` +
          `${(100 * median(g((r) => r.serverBusy ?? Number.NaN))).toFixed(0)} % | ` +
          `${target || '—'} | ${pass === undefined ? '' : pass ? 'PASS' : '**MISS**'} |`,
      );
      socketSummary[mode.id] = {
        label: mode.label,
        conns: mode.conns,
        depth: mode.depth,
        ratio: { median: median(ratios), min: min(ratios), max: max(ratios), rounds: ratios },
        vsNaive: { median: median(vsNaive), min: min(vsNaive), max: max(vsNaive), rounds: vsNaive },
        gateway: data.gateway,
        bare: data.bare,
        naive: data.naive,
      };
    }
  }
  const ab = metricsAb === undefined ? undefined : metricsAbReport(metricsAb.socket, metricsAb.inProcess);
  if (ab !== undefined) out.push('', ...ab.lines);
  const encSummary: Record<string, unknown> = {};
  if (!SKIP_ENC) {
    out.push('');
    out.push('### ENC in process (cached key)');
    out.push('');
    out.push(
      "Baseline: Node `createCipheriv('aes-256-gcm')` + `setAAD` + `update` + `final` + `getAuthTag` per call, random 12-byte nonce. " +
        '`handleLine` = `session.handle("ENC bench/key <b64>")` and `formatReply`: parse + order + base64 decode + seal + base64 encode + reply text; replies waiting for a budget reservation are awaited between batches. ' +
        '`seal()` = the envelope function alone. "Node, pooled nonces" = the baseline with nonces cut from a pre-filled random pool ' +
        "(as the gateway's NoncePool does), i.e. the cipher calls alone; the target is against the first baseline.",
    );
    out.push('');
    out.push(
      '| Plaintext | Node AES-GCM ops/s | handleLine ops/s | handleLine ÷ Node | seal() ops/s | seal() ÷ Node | Node, pooled nonces ops/s | handleLine ÷ Node pooled | Target | |',
    );
    out.push('|---|---:|---:|---:|---:|---:|---:|---:|---|---|');
    for (const s of enc.sizes) {
      const lineRatio = s.lineOps.map((v, i) => v / (s.nodeOps[i] as number));
      const sealRatio = s.sealOps.map((v, i) => v / (s.nodeOps[i] as number));
      const pooledRatio = s.lineOps.map((v, i) => v / (s.nodePooledOps[i] as number));
      let target = '—';
      let verdict = '';
      if (s.size === 32 || s.size === 1024 * 1024) {
        const want = s.size === 32 ? 0.65 : 0.5;
        target = `≥ ${want}x Node`;
        const pass = median(lineRatio) >= want;
        verdict = pass ? 'PASS' : '**MISS**';
        verdicts.push({ workload: `ENC ${s.label} in process`, target, pass });
      }
      out.push(
        `| ${s.label} | ${fmtRate(median(s.nodeOps))} | ${fmtRate(median(s.lineOps))} | ${fmtRatio(lineRatio)} | ` +
          `${fmtRate(median(s.sealOps))} | ${fmtRatio(sealRatio)} | ${fmtRate(median(s.nodePooledOps))} | ${fmtRatio(pooledRatio)} | ` +
          `${target} | ${verdict} |`,
      );
      encSummary[s.label] = {
        size: s.size,
        lineRatio: { median: median(lineRatio), min: min(lineRatio), max: max(lineRatio) },
        sealRatio: { median: median(sealRatio), min: min(sealRatio), max: max(sealRatio) },
        lineVsPooledRatio: { median: median(pooledRatio), min: min(pooledRatio), max: max(pooledRatio) },
        nodeOps: s.nodeOps,
        lineOps: s.lineOps,
        sealOps: s.sealOps,
        nodePooledOps: s.nodePooledOps,
      };
    }
  }
  if (!SKIP_SOCKET) {
    out.push('');
    out.push(
      `Load generator: closed loop in the parent process, servers in child processes; "16 conns × 1 at a time" = 16 connections ` +
        `each with one request outstanding (concurrency 16 across connections). Latency = reply arrival − request write, ` +
        `${WARMUP_MS} ms warm-up per measurement discarded. Server CPU = the server child's user + system time over the ` +
        `measured window ÷ requests; busy = that time ÷ wall time (1.0 = one core saturated).`,
    );
  }
  if (startup !== undefined) {
    out.push('', ...startup.lines);
    verdicts.push(...startup.verdicts);
  }
  if (wal !== undefined) {
    const report = walReport(wal);
    out.push('', ...report.lines);
    verdicts.push(...report.verdicts);
  }
  if (cold !== undefined) {
    const report = coldReport(cold);
    out.push('', ...report.lines);
    verdicts.push(...report.verdicts);
  }
  out.push('', `Targets: ${verdicts.filter((v) => v.pass).length}/${verdicts.filter((v) => v.pass !== undefined).length} met.`);

  const raw = {
    node: process.version,
    cpu: cpu[0]?.model.trim(),
    cores: cpu.length,
    platform: `${process.platform}/${process.arch}`,
    date: new Date().toISOString(),
    rounds: ROUNDS,
    startupRounds: SKIP_STARTUP ? undefined : STARTUP_ROUNDS,
    durationMs: DURATION_MS,
    warmupMs: WARMUP_MS,
    encDurationMs: ENC_DURATION_MS,
    elapsedS,
    loadAverage1m: { before: loadBefore, after: loadAfter },
    targets: verdicts,
    socket: socketSummary,
    enc: encSummary,
    ...(ab ? { metricsAb: ab.summary } : {}),
    ...(startup ? { startup: startup.summary } : {}),
    ...(cold ? { cold } : {}),
    ...(wal ? { wal } : {}),
  };
  const json = JSON.stringify(raw, null, 2);
  process.stdout.write(`${out.join('\n')}\n\n<details><summary>Raw JSON</summary>\n\n\`\`\`json\n${json}\n\`\`\`\n\n</details>\n`);
  if (JSON_FILE !== undefined) writeFileSync(JSON_FILE, `${json}\n`);
}

main().then(
  () => {
    cleanup();
    process.exit(0);
  },
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    cleanup();
    process.exit(1);
  },
);
