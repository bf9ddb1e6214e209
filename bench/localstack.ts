/**
 * LocalStack for the start-up benchmark's S3 row: reuses one that already serves KMS and S3
 * on the port (and leaves it running), else runs localstack/install.sh and start.sh (as the
 * test setup does) and stops exactly that instance afterwards. Never throws: a LocalStack that
 * cannot start makes the S3 row "not measured", with the reason.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** A LocalStack the bench can use; `stop()` stops it only if the bench started it. */
export interface BenchLocalStack {
  readonly endpoint: string;
  /** True when it was already running (reused, left running). */
  readonly reused: boolean;
  /** What starting it took (install.sh + start.sh), when the bench started it. */
  readonly startMs: number | undefined;
  stop(): Promise<void>;
}

/** Where LocalStack's venv and state live, as localstack/paths.sh has it. */
export function cacheDir(repoDir: string): string {
  return process.env.KMSGW_CACHE_DIR || join(repoDir, '.cache');
}

/** True when `endpoint` is a LocalStack whose health reports KMS and S3 available or running. */
export async function isHealthy(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/_localstack/health`, { signal: AbortSignal.timeout(2_000) });
    if (!res.ok) return false;
    const body = (await res.json()) as { services?: Record<string, string> };
    // start.sh runs kms,s3 and only accepts an instance with both.
    return ['kms', 's3'].every((s) => body.services?.[s] === 'available' || body.services?.[s] === 'running');
  } catch {
    return false;
  }
}

function runScript(repoDir: string, name: string, args: string[], timeoutMs: number): Promise<{ ok: boolean; output: string }> {
  return new Promise((resolve) => {
    // Own process group, so a timeout kills pip / python with it.
    const child = spawn('bash', [join(repoDir, 'localstack', name), ...args], {
      cwd: repoDir,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
    const timer = setTimeout(() => {
      output += `\n[${name} killed after ${timeoutMs / 1000} s]`;
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, output: `${output}\n${err.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ ok: code === 0, output });
    });
  });
}

const tail = (text: string, lines = 15): string => text.trimEnd().split('\n').slice(-lines).join('\n');

/**
 * A LocalStack on 127.0.0.1:`port`, or the reason there is none. `onStarted` is told the state
 * dir of an instance the bench started, so an interrupted bench can still signal it.
 */
export async function ensureLocalStack(
  repoDir: string,
  port: number,
  onStarted: (stateDir: string | undefined) => void,
): Promise<BenchLocalStack | { readonly failed: string }> {
  const endpoint = `http://127.0.0.1:${port}`;
  if (await isHealthy(endpoint)) {
    return { endpoint, reused: true, startMs: undefined, stop: () => Promise.resolve() };
  }
  const stateDir = join(cacheDir(repoDir), 'localstack', `bench-${port}`);
  const t0 = performance.now();
  const install = await runScript(repoDir, 'install.sh', [], 15 * 60_000);
  if (!install.ok) return { failed: `localstack/install.sh failed:\n${tail(install.output)}` };
  onStarted(stateDir);
  const start = await runScript(repoDir, 'start.sh', [String(port), stateDir], 180_000);
  const stop = async (): Promise<void> => {
    await runScript(repoDir, 'stop.sh', [String(port), stateDir], 60_000);
    onStarted(undefined);
  };
  if (!start.ok) {
    await stop();
    return { failed: `localstack/start.sh ${port} failed:\n${tail(start.output)}` };
  }
  return { endpoint, reused: false, startMs: performance.now() - t0, stop };
}

/** Synchronous last resort on exit: SIGTERM the LocalStack recorded in `stateDir`. */
export function signalLocalStackSync(stateDir: string): void {
  try {
    const pid = Number(readFileSync(join(stateDir, 'localstack.pid'), 'utf8').trim());
    if (pid > 1) process.kill(pid, 'SIGTERM');
  } catch {
    // no pid file, or gone already
  }
}
