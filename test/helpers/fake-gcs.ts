// Starts/stops fake-gcs-server (the Cloud Storage emulator, a Go binary that test/emulators/fake-gcs/install.sh
// builds into <repo>/.cache/bin) and builds real @google-cloud/storage clients for it. See
// test/emulators/fake-gcs/README.md.
//
// test/setup/fake-gcs.ts starts one shared instance per run (`inject('fakeGcs')`); a test that stops and starts
// the emulator (an outage) starts its own with startFakeGcs() and calls stop()/start(): start() reuses the port.
//
// The binary cannot watch its stdin as the in-repo emulators do (--exit-with-stdin), so each instance gets a tiny
// `sh` watchdog holding a pipe from this process: when this process dies without stopping it, the pipe closes and
// the watchdog SIGTERMs the server. A process 'exit' hook also SIGKILLs whatever is still running.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Storage } from '@google-cloud/storage';
import { killAtExit, stopChild, unrefChild } from './emulator-process.js';
import { freePort } from './net.js';

const REPO_DIR = fileURLToPath(new URL('../..', import.meta.url));
export const FAKE_GCS_INSTALL = join(REPO_DIR, 'test/emulators/fake-gcs/install.sh');
export const FAKE_GCS_BIN = join(process.env.KMSGW_CACHE_DIR || join(REPO_DIR, '.cache'), 'bin', 'fake-gcs-server');
const NAME = 'fake-gcs-server';
const READY_TIMEOUT_MS = 15_000;
const INSTALL_TIMEOUT_MS = 15 * 60_000;
const OUTPUT_LIMIT = 64 * 1024;

/** The shared emulator, as `inject('fakeGcs')` gives it. */
export interface FakeGcsEndpoint {
  /** e.g. http://127.0.0.1:41234 (plain HTTP, no auth); the client's `apiEndpoint` / `keystore.endpoint`. */
  endpoint: string;
}

/** One fake-gcs-server process (memory backend: a restart empties it). */
export interface FakeGcs extends FakeGcsEndpoint {
  readonly port: number;
  readonly running: boolean;
  /** Starts a stopped instance again on the same port (with no buckets or objects). */
  start(): Promise<void>;
  /** SIGTERM (SIGKILL after 5 s); resolves when the process has exited. Idempotent. */
  stop(): Promise<void>;
  /** What the server printed (stdout and stderr) since it last started. */
  output(): string;
}

/**
 * Runs install.sh (idempotent: ~10 ms when the pinned version is installed, a `go install` otherwise, so a
 * version bump in install.sh is picked up). Throws "fake-gcs-server did not start: ..." with its output.
 */
export async function ensureFakeGcsInstalled(): Promise<void> {
  const { code, output } = await new Promise<{ code: number | string | null; output: string }>((resolve) => {
    const child = spawn('bash', [FAKE_GCS_INSTALL], { cwd: REPO_DIR, stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), INSTALL_TIMEOUT_MS);
    child.on('error', (err) => resolve({ code: err.message, output }));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal, output });
    });
  });
  if (code !== 0) {
    throw new Error(`${NAME} did not start: ${FAKE_GCS_INSTALL} failed (${code}).\n${output.trimEnd().split('\n').slice(-30).join('\n')}`);
  }
}

/** True once the server answers the JSON API (list buckets) with 200. */
async function answers(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/storage/v1/b`, { signal: AbortSignal.timeout(1_000) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

/** Spawns the server on `port` and waits until it answers; throws "fake-gcs-server did not start: ..." with its output. */
async function spawnServer(port: number): Promise<{ child: ChildProcess; output: () => string }> {
  const args = ['-scheme', 'http', '-host', '127.0.0.1', '-port', String(port), '-backend', 'memory', '-log-level', 'warn'];
  const child = spawn(FAKE_GCS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  killAtExit(child);
  let output = '';
  const collect = (s: string): void => {
    if (output.length < OUTPUT_LIMIT) output += s;
  };
  child.stdout?.setEncoding('utf8').on('data', collect);
  child.stderr?.setEncoding('utf8').on('data', collect);
  let exited: string | undefined;
  child.on('error', (err) => (exited ??= `spawn failed: ${err.message}`));
  child.on('exit', (code, signal) => (exited ??= `exited with ${code ?? signal} before it was ready`));
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = performance.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exited !== undefined) break;
    if (await answers(endpoint)) {
      if (exited !== undefined) break; // answered, but that was some other process on the port
      startWatchdog(child);
      unrefChild(child);
      return { child, output: () => output };
    }
    if (performance.now() > deadline) {
      exited = `no answer on ${endpoint} within ${READY_TIMEOUT_MS / 1000} s`;
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`${NAME} did not start: ${exited}\n--- output ---\n${output.trimEnd() || '(empty)'}`);
}

/** `sh` waits for EOF on a pipe from this process, then SIGTERMs the server; it exits with the server. */
function startWatchdog(server: ChildProcess): void {
  if (server.pid === undefined) return;
  const dog = spawn('sh', ['-c', 'cat >/dev/null; kill -TERM "$0" 2>/dev/null', String(server.pid)], {
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  dog.on('error', () => undefined);
  unrefChild(dog);
  server.once('exit', () => dog.stdin?.end());
}

/** Starts a fake-gcs-server on a free port (or `port`); install it first (ensureFakeGcsInstalled). */
export async function startFakeGcs(opts: { port?: number } = {}): Promise<FakeGcs> {
  let spawned: Awaited<ReturnType<typeof spawnServer>> | null = null;
  let port = opts.port ?? 0;
  // A free port can be taken before the server binds it: try another one.
  for (let attempt = 1; spawned === null; attempt++) {
    const tryPort = opts.port ?? (await freePort());
    try {
      spawned = await spawnServer(tryPort);
      port = tryPort;
    } catch (err) {
      if (opts.port !== undefined || attempt >= 3 || !/address already in use/.test(String(err))) throw err;
    }
  }
  let current: typeof spawned | null = spawned;
  let last = spawned;
  return {
    port,
    endpoint: `http://127.0.0.1:${port}`,
    get running() {
      return current !== null;
    },
    async start() {
      if (current) return;
      current = await spawnServer(port);
      last = current;
    },
    async stop() {
      const c = current;
      current = null;
      if (c) await stopChild(c.child);
    },
    output: () => last.output(),
  };
}

/** A real @google-cloud/storage client for the emulator: its endpoint, no auth (so no credentials lookup). */
export function fakeGcsClient(endpoint: string): Storage {
  // Belt and braces: should anything in google-auth-library still look for a metadata server, it must not.
  process.env.METADATA_SERVER_DETECTION = 'none';
  return new Storage({ apiEndpoint: endpoint, useAuthWithCustomEndpoint: false, projectId: 'kmsgw-test' });
}
