// Starts/stops the Cloud KMS emulator (test/emulators/gcp-kms/server.mjs) as a child process and builds real
// @google-cloud/kms clients for it. See test/emulators/gcp-kms/README.md.
//
// Every emulator runs with --exit-with-stdin on a pipe from this process, so it exits by itself when this
// process dies without calling stop(); a process 'exit' hook also SIGKILLs whatever is still running.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KeyManagementServiceClient } from '@google-cloud/kms';
import { credentials, status } from '@grpc/grpc-js';

export const GCP_KMS_SERVER = fileURLToPath(new URL('../emulators/gcp-kms/server.mjs', import.meta.url));
const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

export interface GcpKmsEndpoint {
  host: '127.0.0.1';
  port: number;
}

/** A gRPC status name such as 'PERMISSION_DENIED' (OK excluded). */
export type GrpcStatusName = Exclude<keyof typeof status, 'OK'>;

/**
 * A resource name the fault applies to: a call fails when its resource (the request's `name`, `parent` or
 * `crypto_key_version.name`) equals it or lies below it (`<entry>/...`); '*' matches every call.
 * With `times`, only the first `times` matching calls fail (counted from the moment the faults file changed).
 */
export type GcpKmsFaultEntry = string | { name: string; times?: number };

/** Contents of the faults file; see test/emulators/gcp-kms/README.md. */
export type GcpKmsFaults = Partial<Record<GrpcStatusName, GcpKmsFaultEntry[]>> & {
  /** Delay every call (or only calls on DELAY_KEYS) by this many milliseconds before it is handled. */
  DELAY_MS?: number;
  DELAY_KEYS?: string[];
};

export interface GcpKmsEmulator {
  endpoint: GcpKmsEndpoint;
  stateFile: string;
  /** `${stateFile}.faults.json`, re-read by the emulator on every call. */
  faultsFile: string;
  /** Restarts a stopped emulator on the same port with the same state file. */
  start(): Promise<void>;
  /** SIGTERM (SIGKILL after 5 s); resolves when the process has exited. Idempotent. */
  stop(): Promise<void>;
  /** Replaces the faults file (atomically); null or {} removes all faults. */
  setFaults(faults: GcpKmsFaults | null): void;
  /** stop(), then remove the temporary state dir if startGcpKmsEmulator created it. */
  dispose(): Promise<void>;
  /** What the emulator wrote to stderr so far (current process). */
  stderr(): string;
  readonly running: boolean;
}

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

interface Spawned {
  child: ChildProcess;
  port: number;
  stderr: () => string;
}

/**
 * Spawns server.mjs and waits for its "listening <port>" line. Throws "Cloud KMS emulator did not start: ..."
 * with its stderr if it exits or does not get ready within 15 s.
 */
export function spawnGcpKmsEmulator(port: number, stateFile: string): Promise<Spawned> {
  installExitHook();
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [GCP_KMS_SERVER, '--port', String(port), '--state', stateFile, '--exit-with-stdin'],
      { stdio: ['pipe', 'pipe', 'pipe'], env: process.env },
    );
    running.add(child);
    let stderr = '';
    let stdout = '';
    let settled = false;
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`Cloud KMS emulator did not start: ${why}\n--- stderr ---\n${stderr.trimEnd() || '(empty)'}`));
    };
    const timer = setTimeout(() => fail(`no "listening" line within ${READY_TIMEOUT_MS / 1000} s`), READY_TIMEOUT_MS);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      const m = /^listening (\d+)$/m.exec(stdout);
      if (!m || settled) return;
      settled = true;
      clearTimeout(timer);
      // Do not let a forgotten emulator keep this process alive; stdin stays open (it is the liveness pipe).
      child.unref();
      (child.stdout as unknown as Socket).unref();
      (child.stderr as unknown as Socket).unref();
      (child.stdin as unknown as Socket).unref();
      resolve({ child, port: Number(m[1]), stderr: () => stderr });
    });
    child.on('error', (err) => fail(`spawn failed: ${err.message}`));
    child.on('exit', (code, signal) => {
      running.delete(child);
      fail(`exited with ${code ?? signal} before it was ready`);
    });
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

/**
 * Starts an emulator on a free port (or `port`). Without `stateFile`, the state goes to a new temp dir that
 * dispose() (or process exit) removes.
 */
export async function startGcpKmsEmulator(opts: { stateFile?: string; port?: number } = {}): Promise<GcpKmsEmulator> {
  let tempDir: string | null = null;
  let stateFile = opts.stateFile;
  if (!stateFile) {
    tempDir = mkdtempSync(join(tmpdir(), 'kg-gcpkms-'));
    tempDirs.add(tempDir);
    stateFile = join(tempDir, 'state.json');
  }
  const faultsFile = `${stateFile}.faults.json`;
  let spawned: Spawned;
  try {
    spawned = await spawnGcpKmsEmulator(opts.port ?? 0, stateFile);
  } catch (err) {
    if (tempDir) {
      rmSync(tempDir, { recursive: true, force: true });
      tempDirs.delete(tempDir);
    }
    throw err;
  }
  const endpoint: GcpKmsEndpoint = { host: '127.0.0.1', port: spawned.port };
  let current: Spawned | null = spawned;
  let faultSeq = 0;
  const emu: GcpKmsEmulator = {
    endpoint,
    stateFile,
    faultsFile,
    get running() {
      return current !== null;
    },
    async start() {
      if (current) return;
      current = await spawnGcpKmsEmulator(endpoint.port, stateFile);
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
      if (tempDir) {
        rmSync(tempDir, { recursive: true, force: true });
        tempDirs.delete(tempDir);
      }
    },
    stderr: () => spawned.stderr(),
  };
  return emu;
}

/**
 * Options for a real KeyManagementServiceClient talking to the emulator: plaintext gRPC to 127.0.0.1:<port>, and
 * no Google auth at all. `sslCreds` makes google-gax skip fetching Google credentials for the channel, and the
 * explicit `universeDomain` keeps it from resolving one through GoogleAuth.getClient(), which would otherwise
 * look for ADC and probe the GCE metadata server (169.254.169.254 / metadata.google.internal).
 */
export function gcpKmsClientOptions(endpoint: GcpKmsEndpoint) {
  return {
    apiEndpoint: endpoint.host,
    port: endpoint.port,
    sslCreds: credentials.createInsecure(),
    universeDomain: 'googleapis.com',
    projectId: 'kmsgw-test',
  };
}

/** A real @google-cloud/kms client for the emulator. Call close() when done. */
export function adminClient(endpoint: GcpKmsEndpoint): KeyManagementServiceClient {
  // Belt and braces: should anything in google-auth-library still look for a metadata server, it must not.
  process.env.METADATA_SERVER_DETECTION = 'none';
  return new KeyManagementServiceClient(gcpKmsClientOptions(endpoint));
}

/** The gRPC status code of an error thrown by a @google-cloud/kms call. */
export function grpcCode(err: unknown): number | undefined {
  return (err as { code?: number } | null)?.code;
}

export interface KeySpec {
  project?: string;
  location?: string;
  keyRing: string;
  key: string;
}

/**
 * Creates an ENCRYPT_DECRYPT / GOOGLE_SYMMETRIC_ENCRYPTION key (version 1 primary), creating the key ring if
 * missing; returns the CryptoKey name. An existing key of that name is reused.
 */
export async function createKey(client: KeyManagementServiceClient, spec: KeySpec): Promise<string> {
  const parent = `projects/${spec.project ?? 'kmsgw-test'}/locations/${spec.location ?? 'global'}`;
  const keyRingName = `${parent}/keyRings/${spec.keyRing}`;
  try {
    await client.createKeyRing({ parent, keyRingId: spec.keyRing, keyRing: {} });
  } catch (err) {
    if (grpcCode(err) !== status.ALREADY_EXISTS) throw err;
  }
  const keyName = `${keyRingName}/cryptoKeys/${spec.key}`;
  try {
    const [key] = await client.createCryptoKey({
      parent: keyRingName,
      cryptoKeyId: spec.key,
      cryptoKey: {
        purpose: 'ENCRYPT_DECRYPT',
        versionTemplate: { algorithm: 'GOOGLE_SYMMETRIC_ENCRYPTION', protectionLevel: 'SOFTWARE' },
      },
    });
    return key.name ?? keyName;
  } catch (err) {
    if (grpcCode(err) !== status.ALREADY_EXISTS) throw err;
    return keyName;
  }
}
