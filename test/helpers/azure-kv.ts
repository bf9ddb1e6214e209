// Starts/stops the Azure Key Vault emulator (test/emulators/azure-kv/server.mjs) as a child process, makes its
// per-run TLS certificate, and builds real @azure/keyvault-keys clients that trust it. See
// test/emulators/azure-kv/README.md. The process handling (spawn, stop, restart, faults file, temp dir, exit hook)
// is test/helpers/emulator-process.ts.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CryptographyClient, KeyClient, type CryptographyClientOptions, type KeyVaultKey } from '@azure/keyvault-keys';
import { createTempDir, spawnEmulator, startEmulatorProcess, type EmulatorProcess, type SpawnedEmulator } from './emulator-process.js';

export const AZURE_KV_SERVER = fileURLToPath(new URL('../emulators/azure-kv/server.mjs', import.meta.url));
const NAME = 'Key Vault emulator';

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

export interface AzureKvEmulator extends AzureKvEndpoint, EmulatorProcess<AzureKvFaults> {
  port: number;
  /** Restarts a stopped emulator on the same port, with the same certificate and state file. */
  start(): Promise<void>;
  /** The emulator's request log (last 2000 requests since its start). */
  requests(): Promise<AzureKvRequest[]>;
  /** stop(), then remove the temp dir (certificate, and the state unless a stateFile was given). */
  dispose(): Promise<void>;
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
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        keyPath,
        '-out',
        certPath,
        '-days',
        '7',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
        '-addext',
        'basicConstraints=critical,CA:FALSE',
        '-addext',
        'extendedKeyUsage=serverAuth',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
    throw new Error(`${NAME} did not start: openssl could not make the test certificate: ${stderr || String(err)}`, { cause: err });
  }
  return { certPath, keyPath };
}

/**
 * Spawns server.mjs and waits for its "listening <port>" line. Throws "Key Vault emulator did not start: ..."
 * with its stderr if it exits or does not get ready within 15 s.
 */
export function spawnAzureKvEmulator(port: number, stateFile: string, certPath: string, keyPath: string): Promise<SpawnedEmulator> {
  return spawnEmulator(NAME, AZURE_KV_SERVER, port, stateFile, ['--cert', certPath, '--key', keyPath]);
}

/**
 * Starts an emulator on a free port (or `port`) with a fresh self-signed certificate in a new temp dir. Without
 * `stateFile`, the state goes to that temp dir too; dispose() (or process exit) removes it.
 */
export async function startAzureKvEmulator(opts: { stateFile?: string; port?: number } = {}): Promise<AzureKvEmulator> {
  const tempDir = createTempDir('kg-azkv-');
  const stateFile = opts.stateFile ?? join(tempDir.path, 'state.json');
  let cert: { certPath: string; keyPath: string };
  try {
    cert = makeTestCertificate(tempDir.path);
  } catch (err) {
    tempDir.remove();
    throw err;
  }
  return startEmulatorProcess<AzureKvFaults, Omit<AzureKvEmulator, keyof EmulatorProcess<AzureKvFaults>>>({
    spawn: (port) => spawnAzureKvEmulator(port, stateFile, cert.certPath, cert.keyPath),
    stateFile,
    port: opts.port,
    tempDir,
    onDispose: () => releaseAgent(cert.certPath),
    extend: (port) => {
      const vaultUrl = `https://localhost:${port}`;
      return {
        vaultUrl,
        caCertPath: cert.certPath,
        port,
        requests: () => emulatorRequests({ vaultUrl, caCertPath: cert.certPath }),
      };
    },
  });
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
          reject(new Error(`the emulator's request log is not JSON (HTTP ${res.statusCode}): ${body.slice(0, 200)}`, { cause: err }));
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
