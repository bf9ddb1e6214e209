// Starts/stops the Azure Key Vault emulator (test/emulators/azure-kv/server.mjs) as a child process, makes its
// per-run TLS certificate, and builds real @azure/keyvault-keys clients that trust it. See
// test/emulators/azure-kv/README.md.
//
// Every emulator runs with --exit-with-stdin on a pipe from this process, so it exits by itself when this
// process dies without calling stop(); a process 'exit' hook also SIGKILLs whatever is still running.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CryptographyClient, KeyClient, type CryptographyClientOptions, type KeyVaultKey } from '@azure/keyvault-keys';

export const AZURE_KV_SERVER = fileURLToPath(new URL('../emulators/azure-kv/server.mjs', import.meta.url));
const READY_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

/** What a test needs to reach an emulator: the vault URL and the CA (= the self-signed server cert) to trust. */
export interface AzureKvEndpoint {
  /** `https://localhost:<port>` (the certificate also covers 127.0.0.1). */
  vaultUrl: string;
  /** PEM of the emulator's self-signed certificate; trust it per client (testClientOptions), never process-wide. */
  caCertPath: string;
}

/**
 * A key the fault applies to: a request fails when its resource (`<name>`, or `<name>/<version>` when the path
 * names a version) equals it or lies below it; '*' matches every request (also GET /keys).
 * `times`: only the first N matching requests fail (counted from the moment the faults file changed).
 * `retryAfter`: seconds for the Retry-After header (429 always sends one, default 1).
 * `ops`: only these operations: create, get, list, versions, update, wrapKey, unwrapKey, encrypt, decrypt.
 */
export type AzureKvFaultEntry = string | { name: string; times?: number; retryAfter?: number; ops?: AzureKvOp[] };

export type AzureKvOp = 'create' | 'get' | 'list' | 'versions' | 'update' | 'wrapKey' | 'unwrapKey' | 'encrypt' | 'decrypt';

/** Contents of the faults file; see test/emulators/azure-kv/README.md. */
export type AzureKvFaults = {
  /** An HTTP status 400-599 (e.g. "429", "503", "403") → the requests that get it, with a Key Vault error body. */
  [status: `${4 | 5}${number}`]: AzureKvFaultEntry[];
} & {
  /** Drop the connection without a response (the client sees ECONNRESET / socket hang up). */
  RESET?: AzureKvFaultEntry[];
  /** Delay every request (or only requests on DELAY_KEYS) by this many milliseconds before it is handled. */
  DELAY_MS?: number;
  DELAY_KEYS?: string[];
};

/** One request as the emulator saw it (GET /_emulator/requests); 401 = the unauthenticated challenge round. */
export interface AzureKvRequest {
  t: string;
  method: string;
  path: string;
  op: AzureKvOp | null;
  key: string | null;
  /** The version used: for crypto/get with an empty version in the path, the current version it resolved to. */
  version: string | null;
  alg: string | null;
  authorized: boolean;
  /** -1: the connection was reset by a RESET fault. */
  status: number;
}

export interface AzureKvEmulator extends AzureKvEndpoint {
  port: number;
  stateFile: string;
  /** `${stateFile}.faults.json`, re-read by the emulator on every request. */
  faultsFile: string;
  /** Restarts a stopped emulator on the same port, with the same certificate and state file. */
  start(): Promise<void>;
  /** SIGTERM (SIGKILL after 5 s); resolves when the process has exited. Idempotent. */
  stop(): Promise<void>;
  /** Replaces the faults file (atomically); null or {} removes all faults. */
  setFaults(faults: AzureKvFaults | null): void;
  /** The emulator's request log (last 2000 requests since its start). */
  requests(): Promise<AzureKvRequest[]>;
  /** stop(), then remove the temp dir (certificate, and the state unless a stateFile was given). */
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

/**
 * Makes a self-signed P-256 server certificate for localhost / 127.0.0.1 with openssl (~10 ms) in `dir`.
 * The certificate is its own trust anchor: pass certPath as the CA.
 */
export function makeTestCertificate(dir: string): { certPath: string; keyPath: string } {
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  try {
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', keyPath, '-out', certPath, '-days', '7', '-subj', '/CN=localhost',
        '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-addext', 'basicConstraints=critical,CA:FALSE',
        '-addext', 'extendedKeyUsage=serverAuth',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`Key Vault emulator did not start: openssl could not make the test certificate: ${stderr || String(err)}`);
  }
  return { certPath, keyPath };
}

interface Spawned {
  child: ChildProcess;
  port: number;
  stderr: () => string;
}

/**
 * Spawns server.mjs and waits for its "listening <port>" line. Throws "Key Vault emulator did not start: ..."
 * with its stderr if it exits or does not get ready within 15 s.
 */
export function spawnAzureKvEmulator(port: number, stateFile: string, certPath: string, keyPath: string): Promise<Spawned> {
  installExitHook();
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [AZURE_KV_SERVER, '--port', String(port), '--state', stateFile, '--cert', certPath, '--key', keyPath, '--exit-with-stdin'],
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
      reject(new Error(`Key Vault emulator did not start: ${why}\n--- stderr ---\n${stderr.trimEnd() || '(empty)'}`));
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
function stopChild(child: ChildProcess): Promise<void> {
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
 * Starts an emulator on a free port (or `port`) with a fresh self-signed certificate in a new temp dir. Without
 * `stateFile`, the state goes to that temp dir too; dispose() (or process exit) removes it.
 */
export async function startAzureKvEmulator(opts: { stateFile?: string; port?: number } = {}): Promise<AzureKvEmulator> {
  const tempDir = mkdtempSync(join(tmpdir(), 'kg-azkv-'));
  tempDirs.add(tempDir);
  const removeTemp = (): void => {
    rmSync(tempDir, { recursive: true, force: true });
    tempDirs.delete(tempDir);
  };
  const stateFile = opts.stateFile ?? join(tempDir, 'state.json');
  const faultsFile = `${stateFile}.faults.json`;
  let cert: { certPath: string; keyPath: string };
  let spawned: Spawned;
  try {
    cert = makeTestCertificate(tempDir);
    spawned = await spawnAzureKvEmulator(opts.port ?? 0, stateFile, cert.certPath, cert.keyPath);
  } catch (err) {
    removeTemp();
    throw err;
  }
  const port = spawned.port;
  const vaultUrl = `https://localhost:${port}`;
  let current: Spawned | null = spawned;
  let faultSeq = 0;
  const emu: AzureKvEmulator = {
    vaultUrl,
    caCertPath: cert.certPath,
    port,
    stateFile,
    faultsFile,
    get running() {
      return current !== null;
    },
    async start() {
      if (current) return;
      current = await spawnAzureKvEmulator(port, stateFile, cert.certPath, cert.keyPath);
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
    requests: () => emulatorRequests({ vaultUrl, caCertPath: cert.certPath }),
    async dispose() {
      await emu.stop();
      releaseAgent(cert.certPath);
      removeTemp();
    },
    stderr: () => spawned.stderr(),
  };
  return emu;
}

// ---------------------------------------------------------------------------------------------------------------
// SDK clients

type TokenCredential = ConstructorParameters<typeof KeyClient>[1];
type PipelinePolicyConfig = NonNullable<CryptographyClientOptions['additionalPolicies']>[number];

/**
 * A TokenCredential that hands out a dummy token: the emulator runs Key Vault's challenge flow (401 +
 * WWW-Authenticate) but does not validate tokens. Never talks to Entra ID.
 */
export const fakeCredential: TokenCredential = {
  getToken: async () => ({ token: 'kmsgw-test-token', expiresOnTimestamp: Date.now() + 3600_000 }),
};

/** One keep-alive https.Agent per CA file (the emulator's certificate). */
const agents = new Map<string, Agent>();

/** An https.Agent that trusts exactly the PEM at caCertPath (cached per path). */
export function caAgent(caCertPath: string): Agent {
  let agent = agents.get(caCertPath);
  if (!agent) {
    agent = new Agent({ ca: readFileSync(caCertPath), keepAlive: true });
    agents.set(caCertPath, agent);
  }
  return agent;
}

function releaseAgent(caCertPath: string): void {
  agents.get(caCertPath)?.destroy();
  agents.delete(caCertPath);
}

/**
 * A perCall pipeline policy that sends every request of this client through an https.Agent trusting only the
 * emulator's certificate. TLS verification stays on; nothing process-wide changes.
 */
export function caAgentPolicy(caCertPath: string): PipelinePolicyConfig {
  const agent = caAgent(caCertPath);
  return {
    position: 'perCall',
    policy: {
      name: 'kmsgwTestCaAgent',
      sendRequest: (request, next) => {
        request.agent = agent;
        return next(request);
      },
    },
  };
}

/**
 * Options for KeyClient / CryptographyClient against the emulator: trust its certificate (per client) and skip the
 * check that the challenge resource (vault.azure.net) matches the vault host (localhost). `extra` is merged in
 * (e.g. `{ retryOptions: { maxRetries: 0 } }`); its additionalPolicies are appended.
 */
export function testClientOptions(caCertPath: string, extra: CryptographyClientOptions = {}): CryptographyClientOptions {
  return {
    ...extra,
    disableChallengeResourceVerification: true,
    additionalPolicies: [caAgentPolicy(caCertPath), ...(extra.additionalPolicies ?? [])],
  };
}

/** A real KeyClient for the emulator. */
export function keyClient(vaultUrl: string, caCertPath: string, extra?: CryptographyClientOptions): KeyClient {
  return new KeyClient(vaultUrl, fakeCredential, testClientOptions(caCertPath, extra));
}

/** A real CryptographyClient for a key id (versioned or not) or a KeyVaultKey. */
export function cryptoClient(key: string | KeyVaultKey, caCertPath: string, extra?: CryptographyClientOptions): CryptographyClient {
  return new CryptographyClient(key, fakeCredential, testClientOptions(caCertPath, extra));
}

/** The emulator's request log (GET /_emulator/requests, no auth). */
export function emulatorRequests(endpoint: AzureKvEndpoint): Promise<AzureKvRequest[]> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(`${endpoint.vaultUrl}/_emulator/requests`, { agent: caAgent(endpoint.caCertPath) }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => (body += s));
      res.on('end', () => {
        try {
          resolve((JSON.parse(body) as { value: AzureKvRequest[] }).value);
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

/** The Key Vault error fields of a RestError thrown by @azure/keyvault-keys. */
export function kvErrorShape(err: unknown): { statusCode?: number; code?: string; innerCode?: string; message?: string } {
  const e = err as {
    statusCode?: number;
    code?: string;
    message?: string;
    details?: { error?: { innerError?: { code?: string } } };
  } | null;
  return {
    statusCode: e?.statusCode,
    code: e?.code,
    innerCode: e?.details?.error?.innerError?.code,
    message: e?.message,
  };
}
