/**
 * Start-up benchmark: how long `node bin/kmsgw.js serve --config <file>` (the real CLI, a fresh
 * process, this Node) takes from spawn until a PING over its Unix socket answers PONG, with an
 * empty key store and with one of N keys, for the file store and for S3 on LocalStack. Empty
 * and N-key starts alternate (empty first in even rounds, N first in odd ones); the ratio is
 * N ÷ empty of the same round. After PONG the gateway's RSS is read from /proc; with the N-key
 * store it then serves GETs of distinct, not yet cached keys one at a time (cold reads from the
 * store), and its RSS is read again.
 *
 * Over 300 lines because one gateway start (spawn, poll, PING, GETs, RSS, stop) and the rounds that
 * alternate them share the option and process bookkeeping; the store making and the report are apart.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { FileBackend } from '../src/keystore/file/index.js';
import { cacheDir, ensureLocalStack, signalLocalStackSync, type BenchLocalStack } from './localstack.js';
import { BENCH_BUCKET, benchKek, benchKeyId, ensureS3Store, s3Prefixes, writeFileStore, type BenchKek } from './startup-store.js';

export interface StartupOptions {
  readonly repoDir: string;
  readonly tmpRoot: string;
  readonly keys: number;
  readonly rounds: number;
  /** Distinct cold GETs after each N-key start. */
  readonly gets: number;
  readonly localStackPort: number;
  readonly progress: (line: string) => void;
}

export type StoreKind = 'file' | 's3';

/** One start of the gateway. */
export interface StartSample {
  readonly ms: number;
  /** VmRSS / VmHWM in KiB right after PONG. */
  readonly rssKiB: number;
  readonly hwmKiB: number;
  /** With the N-key store: the first GET after start, the others, and RSS after all of them. */
  readonly firstGetMs?: number;
  readonly getMs?: number[];
  readonly rssAfterGetsKiB?: number;
  readonly hwmAfterGetsKiB?: number;
}

export interface KindResult {
  readonly kind: StoreKind;
  readonly url: { readonly empty: string; readonly full: string };
  /** How the N-key store was made. */
  readonly setup: { readonly ms: number; readonly bytes: number; readonly reused?: boolean; readonly note: string };
  readonly empty: StartSample[];
  readonly full: StartSample[];
}

export interface StartupResult {
  readonly keys: number;
  readonly rounds: number;
  readonly gets: number;
  readonly kinds: KindResult[];
  /** Kinds that were not measured, and why. */
  readonly skipped: Array<{ readonly kind: StoreKind; readonly reason: string }>;
  readonly localstack?: { readonly endpoint: string; readonly reused: boolean; readonly startMs?: number };
  /**
   * `FileBackend.open` + `close` alone, in this process, empty and N-key folder alternating (ms):
   * the file store's part of start-up, where a dependence on the key count would show.
   */
  readonly fileOpenMs?: { readonly empty: number[]; readonly full: number[] };
}

// --- processes we started, for the parent's exit handler ------------------------

const gateways = new Set<ChildProcess>();
let localStackStateDir: string | undefined;

/** Synchronous cleanup on exit: kill started gateways, signal a LocalStack the bench started. */
export function killStartupProcesses(): void {
  for (const child of gateways) child.kill('SIGKILL');
  gateways.clear();
  if (localStackStateDir !== undefined) signalLocalStackSync(localStackStateDir);
}

// --- one gateway start ------------------------------------------------------------

const POLL_MS = 5;

function procStatus(pid: number): { rssKiB: number; hwmKiB: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN);
  return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM') };
}

/** A line-at-a-time client on one connection: `ask(line)` resolves with the reply line. */
class LineClient {
  private buffered = '';
  private readonly waiting: Array<{ resolve: (line: string) => void; reject: (err: Error) => void }> = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      this.buffered += chunk;
      for (let lf = this.buffered.indexOf('\n'); lf !== -1; lf = this.buffered.indexOf('\n')) {
        const line = this.buffered.slice(0, lf);
        this.buffered = this.buffered.slice(lf + 1);
        this.waiting.shift()?.resolve(line);
      }
    });
    socket.on('close', () => {
      for (const w of this.waiting.splice(0)) w.reject(new Error('gateway closed the connection'));
    });
  }

  /** Connects once; rejects at once when nothing listens yet. */
  static connect(path: string): Promise<LineClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(path);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        socket.on('error', () => undefined);
        resolve(new LineClient(socket));
      });
    });
  }

  ask(line: string): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(`${line}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

interface StartSpec {
  readonly label: string;
  readonly storeUrl: string;
  readonly s3Endpoint?: string;
  /** Key indexes to GET after PONG (empty: none). */
  readonly getKeys: number[];
}

let startCount = 0;

async function startOnce(options: StartupOptions, kek: BenchKek, spec: StartSpec): Promise<StartSample> {
  const n = ++startCount;
  const dataDir = join(options.tmpRoot, 'startup', `run-${n}`);
  const socketPath = join(dataDir, 'kmsgw.sock');
  const configFile = join(options.tmpRoot, 'startup', `config-${n}.json`);
  const config = {
    dataDir,
    listen: { socket: { path: socketPath } },
    keys: { defaultKek: kek.uri },
    kms: { adapters: { local: { enabled: true, dir: kek.dir } } },
    keystore: {
      url: spec.storeUrl,
      ...(spec.s3Endpoint ? { endpoint: spec.s3Endpoint, forcePathStyle: true, region: 'us-east-1' } : {}),
    },
    log: { level: 'info' },
  };
  await writeFile(configFile, JSON.stringify(config), { mode: 0o600 });
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KMSGW_')) env[k] = v;
  Object.assign(env, { AWS_ACCESS_KEY_ID: 'test', AWS_SECRET_ACCESS_KEY: 'test', AWS_REGION: 'us-east-1' });

  let output = '';
  const keep = (s: string): void => {
    output = (output + s).slice(-4000);
  };
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(options.repoDir, 'bin', 'kmsgw.js'), 'serve', '--config', configFile], {
    cwd: options.repoDir,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  gateways.add(child);
  child.stdout.setEncoding('utf8').on('data', keep);
  child.stderr.setEncoding('utf8').on('data', keep);
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? '?')));
  let exitedEarly: number | string | undefined;
  void exited.then((code) => (exitedEarly = code));
  const fail = (what: string): Error => new Error(`${spec.label}: ${what}\n--- gateway output ---\n${output}`);

  try {
    // Poll: connect every POLL_MS until the socket answers, then PING.
    let client: LineClient | undefined;
    for (;;) {
      if (exitedEarly !== undefined) throw fail(`gateway exited (${exitedEarly}) before answering`);
      if (performance.now() - t0 > 60_000) throw fail('no PONG within 60 s');
      client = await LineClient.connect(socketPath).catch(() => undefined);
      if (client !== undefined) break;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    const pong = await client.ask('PING');
    const ms = performance.now() - t0;
    if (pong !== 'OK PONG') throw fail(`PING answered ${JSON.stringify(pong)}`);
    const atPong = procStatus(child.pid as number);
    let sample: StartSample = { ms, ...atPong };
    if (spec.getKeys.length > 0) {
      const times: number[] = [];
      for (const i of spec.getKeys) {
        const g0 = performance.now();
        const reply = await client.ask(`GET ${benchKeyId(i, options.keys)}`);
        times.push(performance.now() - g0);
        if (!reply.startsWith('OK ')) throw fail(`GET ${benchKeyId(i, options.keys)} answered ${reply.slice(0, 120)}`);
      }
      const after = procStatus(child.pid as number);
      sample = {
        ...sample,
        firstGetMs: times[0],
        getMs: times.slice(1),
        rssAfterGetsKiB: after.rssKiB,
        hwmAfterGetsKiB: after.hwmKiB,
      };
    }
    client.close();
    return sample;
  } finally {
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 15_000))]);
    if (code === 'timeout') child.kill('SIGKILL');
    await exited;
    gateways.delete(child);
    await rm(dataDir, { recursive: true, force: true });
    await rm(configFile, { force: true });
  }
}

// --- the whole part ---------------------------------------------------------------

export async function runStartupBench(options: StartupOptions): Promise<StartupResult> {
  const { keys, rounds, gets, progress } = options;
  const kek = await benchKek(cacheDir(options.repoDir));
  const base = join(options.tmpRoot, 'startup');
  await mkdir(base, { recursive: true, mode: 0o700 });

  const kinds: Array<{ kind: StoreKind; empty: StartSpec; full: StartSpec; setup: KindResult['setup'] }> = [];
  const skipped: StartupResult['skipped'] = [];

  // File store: written fresh each run (a few seconds).
  const fileEmpty = join(base, 'store-empty');
  const fileFull = join(base, `store-${keys}`);
  await mkdir(fileEmpty, { mode: 0o700 });
  const t0 = performance.now();
  const written = await writeFileStore(kek, fileFull, keys);
  const fileSetupMs = performance.now() - t0;
  progress(`  file store: ${keys} records written in ${(fileSetupMs / 1000).toFixed(1)} s`);
  kinds.push({
    kind: 'file',
    empty: { label: 'file, empty', storeUrl: `file://${fileEmpty}`, getKeys: [] },
    full: { label: `file, ${keys} keys`, storeUrl: `file://${fileFull}`, getKeys: [] },
    setup: { ms: fileSetupMs, bytes: written.bytes, note: `${keys} files written in ${(fileSetupMs / 1000).toFixed(1)} s` },
  });

  // S3 on LocalStack.
  let localstack: BenchLocalStack | undefined;
  const ls = await ensureLocalStack(options.repoDir, options.localStackPort, (dir) => (localStackStateDir = dir));
  if ('failed' in ls) {
    skipped.push({ kind: 's3', reason: `LocalStack did not start on 127.0.0.1:${options.localStackPort}: ${ls.failed}` });
  } else {
    localstack = ls;
    progress(
      ls.reused
        ? `  LocalStack: reusing ${ls.endpoint}`
        : `  LocalStack: started ${ls.endpoint} in ${((ls.startMs ?? 0) / 1000).toFixed(1)} s`,
    );
    try {
      const s3Start = performance.now();
      const s3 = await ensureS3Store(kek, ls.endpoint, keys);
      const prefixes = s3Prefixes(kek, keys);
      const note = s3.reused
        ? `reused from an earlier run on this LocalStack (that upload took ${(s3.uploadMs / 1000).toFixed(1)} s)`
        : `${keys} objects uploaded in ${(s3.uploadMs / 1000).toFixed(1)} s, 64 at a time`;
      progress(`  S3 store: ${note}`);
      kinds.push({
        kind: 's3',
        empty: { label: 's3, empty', storeUrl: `s3://${BENCH_BUCKET}/${prefixes.empty}`, s3Endpoint: ls.endpoint, getKeys: [] },
        full: { label: `s3, ${keys} keys`, storeUrl: `s3://${BENCH_BUCKET}/${prefixes.full}`, s3Endpoint: ls.endpoint, getKeys: [] },
        setup: { ms: performance.now() - s3Start, bytes: s3.bytes, reused: s3.reused, note },
      });
    } catch (err) {
      skipped.push({ kind: 's3', reason: `could not make the S3 store on ${ls.endpoint}: ${(err as Error).message}` });
    }
  }

  const results: KindResult[] = kinds.map((k) => ({
    kind: k.kind,
    url: { empty: k.empty.storeUrl, full: k.full.storeUrl },
    setup: k.setup,
    empty: [],
    full: [],
  }));
  // Distinct keys per start, so no start GETs a key an earlier one read (page cache, LocalStack).
  let nextKey = 0;
  const takeKeys = (): number[] => Array.from({ length: gets }, () => nextKey++ % keys);
  let fileOpenMs: StartupResult['fileOpenMs'];
  try {
    // Warm-up: one start of each, not recorded (compile cache, page cache of Node and the modules).
    for (const k of kinds) {
      await startOnce(options, kek, k.empty);
      await startOnce(options, kek, { ...k.full, getKeys: takeKeys() });
    }
    for (let round = 0; round < rounds; round++) {
      for (const [i, k] of kinds.entries()) {
        const result = results[i] as KindResult;
        const order = round % 2 === 0 ? (['empty', 'full'] as const) : (['full', 'empty'] as const);
        for (const which of order) {
          const spec = which === 'full' ? { ...k.full, getKeys: takeKeys() } : k.empty;
          result[which].push(await startOnce(options, kek, spec));
        }
      }
      progress(`  start-up round ${round + 1}/${rounds} done`);
    }
    fileOpenMs = await timeFileOpen(fileEmpty, fileFull, rounds);
  } finally {
    await kek.wrapper.close();
    await localstack?.stop();
    await rm(base, { recursive: true, force: true });
  }
  return {
    keys,
    rounds,
    gets,
    kinds: results,
    skipped,
    ...(fileOpenMs ? { fileOpenMs } : {}),
    ...(localstack ? { localstack: { endpoint: localstack.endpoint, reused: localstack.reused, startMs: localstack.startMs } } : {}),
  };
}

/** Opens and closes the file backend on each folder, alternating, after one warm-up each. */
async function timeFileOpen(empty: string, full: string, rounds: number): Promise<{ empty: number[]; full: number[] }> {
  const out = { empty: [] as number[], full: [] as number[] };
  const once = async (dir: string): Promise<number> => {
    const t0 = performance.now();
    const backend = await FileBackend.open(dir);
    const ms = performance.now() - t0;
    await backend.close();
    return ms;
  };
  await once(empty);
  await once(full);
  for (let round = 0; round < rounds; round++) {
    for (const which of round % 2 === 0 ? (['empty', 'full'] as const) : (['full', 'empty'] as const)) {
      out[which].push(await once(which === 'full' ? full : empty));
    }
  }
  return out;
}
