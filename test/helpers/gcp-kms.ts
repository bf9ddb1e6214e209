// Starts/stops the Cloud KMS emulator (test/emulators/gcp-kms/server.mjs) as a child process and builds real
// @google-cloud/kms clients for it. See test/emulators/gcp-kms/README.md. The process handling (spawn, stop,
// restart, faults file, temp dir, exit hook) is test/helpers/emulator-process.ts.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KeyManagementServiceClient } from '@google-cloud/kms';
import { credentials, status } from '@grpc/grpc-js';
import {
  createTempDir,
  spawnEmulator,
  startEmulatorProcess,
  stopChild,
  type EmulatorProcess,
  type SpawnedEmulator,
} from './emulator-process.js';

export { stopChild };

export const GCP_KMS_SERVER = fileURLToPath(new URL('../emulators/gcp-kms/server.mjs', import.meta.url));
const NAME = 'Cloud KMS emulator';

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
 * With `retryDelayMs`, the error carries a google.rpc.RetryInfo with that delay (status details).
 */
export type GcpKmsFaultEntry = string | { name: string; times?: number; retryDelayMs?: number };

/** Contents of the faults file; see test/emulators/gcp-kms/README.md. */
export type GcpKmsFaults = Partial<Record<GrpcStatusName, GcpKmsFaultEntry[]>> & {
  /** Delay every call (or only calls on DELAY_KEYS) by this many milliseconds before it is handled. */
  DELAY_MS?: number;
  DELAY_KEYS?: string[];
};

export interface GcpKmsEmulator extends EmulatorProcess<GcpKmsFaults> {
  endpoint: GcpKmsEndpoint;
  /** Restarts a stopped emulator on the same port with the same state file. */
  start(): Promise<void>;
  /** stop(), then remove the temporary state dir if startGcpKmsEmulator created it. */
  dispose(): Promise<void>;
}

/**
 * Spawns server.mjs and waits for its "listening <port>" line. Throws "Cloud KMS emulator did not start: ..."
 * with its stderr if it exits or does not get ready within 15 s.
 */
export function spawnGcpKmsEmulator(port: number, stateFile: string): Promise<SpawnedEmulator> {
  return spawnEmulator(NAME, GCP_KMS_SERVER, port, stateFile);
}

/**
 * Starts an emulator on a free port (or `port`). Without `stateFile`, the state goes to a new temp dir that
 * dispose() (or process exit) removes.
 */
export async function startGcpKmsEmulator(opts: { stateFile?: string; port?: number } = {}): Promise<GcpKmsEmulator> {
  const tempDir = opts.stateFile ? null : createTempDir('kg-gcpkms-');
  const stateFile = opts.stateFile || join(tempDir!.path, 'state.json');
  return startEmulatorProcess<GcpKmsFaults, { endpoint: GcpKmsEndpoint }>({
    spawn: (port) => spawnGcpKmsEmulator(port, stateFile),
    stateFile,
    port: opts.port,
    tempDir,
    extend: (port) => ({ endpoint: { host: '127.0.0.1', port } }),
  });
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
