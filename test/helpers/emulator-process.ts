// The process side of the in-repo emulators (test/emulators/*/server.mjs), shared by test/helpers/gcp-kms.ts and
// test/helpers/azure-kv.ts: spawn a server.mjs and wait for its "listening <port>" line, stop it, restart it on the
// same port, write its faults file, and clean up its temp dir.
//
// Every emulator runs with --exit-with-stdin on a pipe from this process, so it exits by itself when this
// process dies without calling stop(); a process 'exit' hook also SIGKILLs whatever is still running and removes
// the temp dirs still registered.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

/** Children still running, killed if this process exits under us. */
const running = new Set<ChildProcess>();
/** Temp dirs to remove at exit. */
const tempDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });
}

/** SIGKILLs `child` if this process exits while it still runs (a forgotten emulator never outlives the tests). */
export function killAtExit(child: ChildProcess): void {
  installExitHook();
  running.add(child);
  child.once('exit', () => running.delete(child));
}

/** Lets this process exit with `child` still running: a forgotten emulator must not hold it open. */
export function unrefChild(child: ChildProcess): void {
  child.unref();
  for (const stream of [child.stdin, child.stdout, child.stderr]) (stream as Socket | null)?.unref();
}

/** A temp dir that is removed at process exit unless remove() ran before. */
export interface TempDir {
  path: string;
  remove(): void;
}

/** mkdtemp in the OS temp dir (`<prefix>XXXXXX`), registered for removal at process exit. */
export function createTempDir(prefix: string): TempDir {
  installExitHook();
  const path = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(path);
  return {
    path,
    remove() {
      rmSync(path, { recursive: true, force: true });
      tempDirs.delete(path);
    },
  };
}

export interface SpawnedEmulator {
  child: ChildProcess;
  port: number;
  stderr: () => string;
}

/**
 * Spawns `node <server> --port <port> --state <stateFile> ...extraArgs --exit-with-stdin` and waits for its
 * "listening <port>" line. Throws "<name> did not start: ..." with its stderr if it exits or does not get ready
 * within 15 s.
 * @param name e.g. 'Cloud KMS emulator'
 */
export function spawnEmulator(
  name: string,
  server: string,
  port: number,
  stateFile: string,
  extraArgs: readonly string[] = [],
): Promise<SpawnedEmulator> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [server, '--port', String(port), '--state', stateFile, ...extraArgs, '--exit-with-stdin'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: process.env,
    });
    killAtExit(child);
    let stderr = '';
    let stdout = '';
    let settled = false;
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${name} did not start: ${why}\n--- stderr ---\n${stderr.trimEnd() || '(empty)'}`));
    };
    const timer = setTimeout(() => fail(`no "listening" line within ${READY_TIMEOUT_MS / 1000} s`), READY_TIMEOUT_MS);
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      const m = /^listening (\d+)$/m.exec(stdout);
      if (!m || settled) return;
      settled = true;
      clearTimeout(timer);
      // stdin stays open: it is the liveness pipe.
      unrefChild(child);
      resolve({ child, port: Number(m[1]), stderr: () => stderr });
    });
    child.on('error', (err) => fail(`spawn failed: ${err.message}`));
    child.on('exit', (code, signal) => fail(`exited with ${code ?? signal} before it was ready`));
  });
}

/** SIGTERM, then SIGKILL after 5 s; resolves when the child has exited. */
export function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    running.delete(child);
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    child.once('exit', () => {
      clearTimeout(timer);
      running.delete(child);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** What every emulator handle offers; F is the faults-file contents. */
export interface EmulatorProcess<F> {
  stateFile: string;
  /** `${stateFile}.faults.json`, re-read by the emulator on every call (request). */
  faultsFile: string;
  /** Restarts a stopped emulator on the same port with the same arguments (state file, certificate, ...). */
  start(): Promise<void>;
  /** SIGTERM (SIGKILL after 5 s); resolves when the process has exited. Idempotent. */
  stop(): Promise<void>;
  /** Replaces the faults file (atomically); null or {} removes all faults. */
  setFaults(faults: F | null): void;
  /** stop(), then remove the emulator's temp dir (if it has one). */
  dispose(): Promise<void>;
  /** What the emulator wrote to stderr so far (current process). */
  stderr(): string;
  readonly running: boolean;
}

export interface StartEmulatorOptions<X> {
  /** Spawns the emulator on `port` (0 = a free one); called again with the first port by start(). */
  spawn(port: number): Promise<SpawnedEmulator>;
  stateFile: string;
  port?: number;
  /** Removed by dispose(), and right away if the first spawn fails. */
  tempDir?: TempDir | null;
  /** Runs in dispose() after the process has stopped, before the temp dir is removed. */
  onDispose?(): void;
  /** The emulator-specific fields of the handle, given the port it listens on. */
  extend(port: number): X;
}

/** Spawns an emulator and returns its handle: the EmulatorProcess fields plus what `extend` adds. */
export async function startEmulatorProcess<F extends object, X extends object>(
  opts: StartEmulatorOptions<X>,
): Promise<EmulatorProcess<F> & X> {
  const { stateFile, tempDir } = opts;
  const faultsFile = `${stateFile}.faults.json`;
  let spawned: SpawnedEmulator;
  try {
    spawned = await opts.spawn(opts.port ?? 0);
  } catch (err) {
    tempDir?.remove();
    throw err;
  }
  const port = spawned.port;
  let current: SpawnedEmulator | null = spawned;
  let faultSeq = 0;
  const base: EmulatorProcess<F> = {
    stateFile,
    faultsFile,
    get running() {
      return current !== null;
    },
    async start() {
      if (current) return;
      current = await opts.spawn(port);
      spawned = current;
    },
    async stop() {
      const c = current;
      current = null;
      if (c) await stopChild(c.child);
    },
    setFaults(faults) {
      if (!faults || Object.keys(faults).length === 0) {
        rmSync(faultsFile, { force: true });
        return;
      }
      // _seq makes every write distinct, so the emulator resets its `times` counters even for equal contents.
      const tmp = `${faultsFile}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify({ ...faults, _seq: ++faultSeq }));
      renameSync(tmp, faultsFile);
    },
    async dispose() {
      await emu.stop();
      opts.onDispose?.();
      tempDir?.remove();
    },
    stderr: () => spawned.stderr(),
  };
  // Object.assign onto `base` keeps its `running` getter live.
  const emu = Object.assign(base, opts.extend(port));
  return emu;
}

/**
 * For a vitest globalSetup: runs `start`, and rethrows a failure as "<name> did not start: ..." (unless it already
 * says so), so the run fails with a clear reason.
 */
export async function startOrExplain<T>(name: string, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    const prefix = `${name} did not start`;
    throw new Error(msg.startsWith(prefix) ? msg : `${prefix}: ${msg}`, { cause: err });
  }
}
