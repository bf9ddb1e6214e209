// Vitest globalSetup: makes sure a LocalStack with KMS and S3 serves http://127.0.0.1:4566 for the whole run
// and provides two symmetric test KEKs to the tests (`inject('localstack')`). S3 is for the S3 key store's
// tests, which make their own buckets.
//
// - If LocalStack KMS and S3 already answer on the port, it is reused and left running afterwards. A
//   LocalStack with KMS only there (an older start.sh) makes start.sh fail with a message to stop it.
// - Otherwise localstack/install.sh (idempotent, ~0.4 s when up to date, ~40 s cold) and localstack/start.sh
//   run, and the teardown stops exactly that instance, plus any extra instances tests started with
//   test/helpers/localstack.ts.
// - If it cannot start, setup throws "LocalStack did not start ..." and the run fails; nothing is skipped.
//
// Env: KMSGW_CACHE_DIR (replaces <repo>/.cache), KMSGW_LOCALSTACK_PORT (default 4566).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateAliasCommand, CreateKeyCommand, DescribeKeyCommand, KMSClient, UpdateAliasCommand } from '@aws-sdk/client-kms';
import type { TestProject } from 'vitest/node';

export interface LocalStackContext {
  /** e.g. http://127.0.0.1:4566 */
  endpoint: string;
  region: string;
  /** Key ARNs of the two symmetric test KEKs. */
  keyA: string;
  keyB: string;
  aliasA: 'alias/kmsgw-test-a';
  aliasB: 'alias/kmsgw-test-b';
}

declare module 'vitest' {
  export interface ProvidedContext {
    localstack: LocalStackContext;
    /** Where test/helpers/localstack.ts puts the state dirs of extra instances; the teardown stops them. */
    localstackExtrasDir: string;
  }
}

export const REPO_DIR = fileURLToPath(new URL('../..', import.meta.url));
export const LOCALSTACK_DIR = join(process.env.KMSGW_CACHE_DIR || join(REPO_DIR, '.cache'), 'localstack');
export const REGION = 'us-east-1';
const SCRIPTS_DIR = join(REPO_DIR, 'localstack');
const TAIL_LINES = 40;

/** Child processes (process groups) still running; killed if the main process exits under us. */
const runningScripts = new Set<ChildProcess>();

export function kmsClient(endpoint: string, region = REGION): KMSClient {
  // The SDK warns once per process that Node 20 support ends in 2027; keep it out of the test output.
  // The env var is restored, but the SDK remembers "warned" per process, so later clients stay quiet too.
  const saved = process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  try {
    return new KMSClient({
      region,
      endpoint,
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      maxAttempts: 3,
    });
  } finally {
    if (saved === undefined) delete process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
    else process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = saved;
  }
}

/** The services start.sh runs (`SERVICES=kms,s3`); a LocalStack is reused only when all of them are up. */
export const SERVICES = ['kms', 's3'] as const;

/** True when `endpoint` is a LocalStack whose health reports KMS and S3 available or running. */
export async function isLocalStackHealthy(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/_localstack/health`, { signal: AbortSignal.timeout(2_000) });
    if (!res.ok) return false;
    const body = (await res.json()) as { services?: Record<string, string> };
    return SERVICES.every((name) => {
      const state = body.services?.[name];
      return state === 'available' || state === 'running';
    });
  } catch {
    return false;
  }
}

export interface ScriptResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** stdout and stderr, interleaved. */
  output: string;
}

/**
 * Runs localstack/<name> with bash, capturing its output (nothing is inherited). It runs in its own process
 * group so a timeout can kill it with all its children (pip, python).
 */
export function runLocalStackScript(name: string, args: string[], timeoutMs: number): Promise<ScriptResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [join(SCRIPTS_DIR, name), ...args], {
      cwd: REPO_DIR,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: process.env,
    });
    runningScripts.add(child);
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (output += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (output += s));
    const timer = setTimeout(() => {
      output += `\n[${name} killed after ${timeoutMs / 1000} s]\n`;
      killGroup(child, 'SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      runningScripts.delete(child);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      runningScripts.delete(child);
      resolve({ code, signal, output });
    });
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

export function tail(text: string, lines = TAIL_LINES): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

export function logTail(stateDir: string, lines = TAIL_LINES): string {
  try {
    return tail(readFileSync(join(stateDir, 'localstack.log'), 'utf8'), lines);
  } catch {
    return '(no log)';
  }
}

/** install.sh then start.sh; throws "LocalStack did not start: ..." with the output / log tail on failure. */
export async function installAndStart(port: number, stateDir: string): Promise<{ installMs: number; startMs: number }> {
  const t0 = performance.now();
  const install = await runLocalStackScript('install.sh', [], 15 * 60_000);
  const t1 = performance.now();
  if (install.code !== 0) {
    throw new Error(
      `LocalStack did not start: localstack/install.sh failed (exit ${install.code ?? install.signal}).\n` + tail(install.output),
    );
  }
  await startOnly(port, stateDir);
  return { installMs: t1 - t0, startMs: performance.now() - t1 };
}

/** start.sh only (the venv must exist); throws "LocalStack did not start: ..." on failure. */
export async function startOnly(port: number, stateDir: string): Promise<void> {
  const startTimeoutS = Number(process.env.KMSGW_LOCALSTACK_START_TIMEOUT || 90);
  const start = await runLocalStackScript('start.sh', [String(port), stateDir], (startTimeoutS + 60) * 1000);
  if (start.code !== 0) {
    // start.sh prints the last 40 log lines itself; add them here only if it did not get that far.
    const out = tail(start.output, TAIL_LINES + 10);
    const log = out.includes('--- last 40 lines of')
      ? ''
      : `\n--- last ${TAIL_LINES} lines of ${join(stateDir, 'localstack.log')} ---\n${logTail(stateDir)}`;
    throw new Error(
      `LocalStack did not start on 127.0.0.1:${port}: localstack/start.sh failed (exit ${start.code ?? start.signal}).\n${out}${log}`,
    );
  }
}

export async function stopInstance(port: number, stateDir: string): Promise<void> {
  const res = await runLocalStackScript('stop.sh', [String(port), stateDir], 60_000);
  if (res.code !== 0) throw new Error(`localstack/stop.sh failed (exit ${res.code ?? res.signal}):\n${tail(res.output)}`);
}

/** Synchronous last resort for process exit: SIGTERM the LocalStack pids recorded in these state dirs. */
function signalStateDirsSync(stateDirs: string[]): void {
  for (const dir of stateDirs) {
    try {
      const pid = Number(readFileSync(join(dir, 'localstack.pid'), 'utf8').trim());
      if (pid > 1) process.kill(pid, 'SIGTERM');
    } catch {
      // no pid file or already gone
    }
  }
}

function extraStateDirs(extrasDir: string): string[] {
  if (!existsSync(extrasDir)) return [];
  return readdirSync(extrasDir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => join(extrasDir, d.name));
}

async function ensureAliasedKey(kms: KMSClient, alias: string, description: string): Promise<string> {
  // Aliases must target the key id: LocalStack 4.14.0 accepts a key ARN in UpdateAlias but then cannot
  // resolve the alias (NotFoundException "Invalid keyId 'arn:...'").
  const createKey = async (): Promise<{ keyId: string; arn: string }> => {
    const res = await kms.send(
      new CreateKeyCommand({ Description: description, KeySpec: 'SYMMETRIC_DEFAULT', KeyUsage: 'ENCRYPT_DECRYPT' }),
    );
    const keyId = res.KeyMetadata?.KeyId;
    const arn = res.KeyMetadata?.Arn;
    if (!keyId || !arn) throw new Error(`CreateKey for ${alias} returned no KeyId/Arn`);
    return { keyId, arn };
  };
  try {
    const meta = (await kms.send(new DescribeKeyCommand({ KeyId: alias }))).KeyMetadata;
    if (meta?.Arn && meta.KeyState === 'Enabled' && meta.KeySpec === 'SYMMETRIC_DEFAULT') return meta.Arn; // reused LocalStack
    // The alias exists (reused LocalStack) but its key is disabled, pending deletion or not symmetric.
    const key = await createKey();
    await kms.send(new UpdateAliasCommand({ AliasName: alias, TargetKeyId: key.keyId }));
    return key.arn;
  } catch (err) {
    if ((err as { name?: string }).name !== 'NotFoundException') throw err;
  }
  const key = await createKey();
  try {
    await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: key.keyId }));
    return key.arn;
  } catch (err) {
    if ((err as { name?: string }).name !== 'AlreadyExistsException') throw err;
  }
  // Another run created it in between: use theirs.
  const meta = (await kms.send(new DescribeKeyCommand({ KeyId: alias }))).KeyMetadata;
  if (!meta?.Arn) throw new Error(`DescribeKey ${alias} returned no ARN`);
  return meta.Arn;
}

/** True while a process with this pid exists (EPERM: it exists, owned by another user). */
function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Extras dirs of earlier vitest runs that died without teardown: stop what is left in them, remove them. */
async function sweepStaleExtras(): Promise<void> {
  if (!existsSync(LOCALSTACK_DIR)) return;
  const stale = readdirSync(LOCALSTACK_DIR)
    .map((name) => /^vitest-(\d+)$/.exec(name))
    .filter((m): m is RegExpExecArray => m !== null && !pidAlive(Number(m[1])))
    .map((m) => join(LOCALSTACK_DIR, m[0]));
  for (const dir of stale) {
    await Promise.allSettled(extraStateDirs(dir).map((d) => stopInstance(0, d)));
    rmSync(dir, { recursive: true, force: true });
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const port = Number(process.env.KMSGW_LOCALSTACK_PORT || 4566);
  const endpoint = `http://127.0.0.1:${port}`;
  const stateDir = join(LOCALSTACK_DIR, `run-${port}`);
  const extrasDir = join(LOCALSTACK_DIR, `vitest-${process.pid}`);
  let startedMain = false;

  // If vitest exits without running the teardown (Ctrl-C, close timeout), still signal what we started.
  const onExit = (): void => {
    for (const child of runningScripts) killGroup(child, 'SIGKILL');
    signalStateDirsSync([...(startedMain ? [stateDir] : []), ...extraStateDirs(extrasDir)]);
  };
  process.on('exit', onExit);

  const teardown = async (): Promise<void> => {
    const dirs = extraStateDirs(extrasDir);
    const results = await Promise.allSettled([
      ...dirs.map((dir) => stopInstance(0, dir)),
      ...(startedMain ? [stopInstance(port, stateDir)] : []),
    ]);
    process.off('exit', onExit);
    rmSync(extrasDir, { recursive: true, force: true });
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length > 0) throw new Error(failed.map((f) => String(f.reason)).join('\n'));
  };

  try {
    await sweepStaleExtras();
    if (await isLocalStackHealthy(endpoint)) {
      console.log(`[localstack] reusing the LocalStack already serving ${endpoint} (left running)`);
    } else {
      startedMain = true; // start.sh cleans up after itself when it fails; teardown handles the rest
      const { installMs, startMs } = await installAndStart(port, stateDir);
      console.log(
        `[localstack] started ${endpoint} (install.sh ${(installMs / 1000).toFixed(1)} s, start.sh ${(startMs / 1000).toFixed(1)} s)`,
      );
    }

    const kms = kmsClient(endpoint);
    try {
      const keyA = await ensureAliasedKey(kms, 'alias/kmsgw-test-a', 'kmsgw test KEK A');
      const keyB = await ensureAliasedKey(kms, 'alias/kmsgw-test-b', 'kmsgw test KEK B');
      project.provide('localstack', { endpoint, region: REGION, keyA, keyB, aliasA: 'alias/kmsgw-test-a', aliasB: 'alias/kmsgw-test-b' });
    } catch (err) {
      const log = startedMain ? `\n${logTail(stateDir)}` : '';
      throw new Error(`LocalStack at ${endpoint} is up but creating the test KEKs failed: ${String(err)}${log}`, { cause: err });
    } finally {
      kms.destroy();
    }
    project.provide('localstackExtrasDir', extrasDir);
  } catch (err) {
    // vitest does not call a teardown it never received: clean up here, then fail the run.
    await teardown().catch(() => {});
    throw err;
  }
  return teardown;
}
