// Starts/stops Azurite's blob service (the npm package `azurite`, its `azurite-blob` CLI) as a child process on
// 127.0.0.1, and builds real @azure/storage-blob clients for it. test/setup/azurite.ts starts the shared one;
// a test that stops and restarts the store (outages) starts its own with startAzurite().
//
// The child runs on this process's Node (so the Node 22 run tests Azurite on Node 22 too), through a one-line
// launcher that exits when its stdin pipe from this process closes: a test process that dies leaves no Azurite
// behind. Flags: --silent (no access log), --disableTelemetry (no Application Insights traffic, no prompt),
// --skipApiVersionCheck (@azure/storage-blob 12.34 sends x-ms-version 2026-10-06, which Azurite 3.37 refuses as
// unknown without it; the blob calls kmsgw makes are the same in both versions).
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { createTempDir, stopChild, unrefChild, type TempDir } from './emulator-process.js';

const NAME = 'Azurite';
const READY_TIMEOUT_MS = 20_000;

/** Azurite's one built-in account. */
export const AZURITE_ACCOUNT = 'devstoreaccount1';
/** The account key every Azurite (and the old Storage Emulator) has; public, documented by Microsoft. */
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

/** What `inject('azurite')` gives: everything a client needs. */
export interface AzuriteEndpoint {
  /** `http://127.0.0.1:<port>/devstoreaccount1`: Azurite takes the account from the first path segment. */
  endpoint: string;
  account: string;
  key: string;
}

export interface AzuriteOptions {
  /** 0 or absent: a free port. */
  port?: number;
  /**
   * Keep blobs across stop()/start(): Azurite stores them in a temp dir (`--location`) instead of memory.
   * Its metadata (LokiJS) is saved on a graceful stop (SIGTERM, what stop() sends); a SIGKILL can lose the last
   * few seconds. Default false: in-memory, so a restart starts empty.
   */
  keepData?: boolean;
}

export interface AzuriteProcess extends AzuriteEndpoint {
  port: number;
  /** Restarts a stopped Azurite on the same port (empty unless keepData). */
  start(): Promise<void>;
  /** SIGTERM (SIGKILL after 5 s); resolves when the process has exited. Idempotent. */
  stop(): Promise<void>;
  /** stop(), then remove the data dir if there is one. */
  dispose(): Promise<void>;
  /** What Azurite wrote to stdout and stderr so far (current process). */
  output(): string;
  readonly running: boolean;
}

/** The azurite-blob CLI script, from the package's own `bin` entry. */
function azuriteBlobMain(): string {
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve('azurite/package.json');
  const pkg = require(pkgPath) as { bin: Record<string, string> };
  const bin = pkg.bin['azurite-blob'];
  if (!bin) throw new Error(`${NAME} did not start: the azurite package has no azurite-blob command`);
  return join(dirname(pkgPath), bin);
}

// argv[1] is the CLI script, so Azurite parses argv.slice(2) as it would when run directly. stdin stays
// unref'd: it must not keep Azurite alive after its SIGTERM shutdown.
const LAUNCHER = "process.stdin.on('end',()=>process.exit(0)).on('error',()=>process.exit(0)).resume().unref?.();require(process.argv[1]);";

interface Spawned {
  child: ChildProcess;
  port: number;
  output: () => string;
}

function spawnAzurite(port: number, dataDir: string | undefined): Promise<Spawned> {
  const args = [
    '-e',
    LAUNCHER,
    azuriteBlobMain(),
    '--blobHost',
    '127.0.0.1',
    '--blobPort',
    String(port),
    '--silent',
    '--disableTelemetry',
    '--skipApiVersionCheck',
    ...(dataDir ? ['--location', dataDir] : ['--inMemoryPersistence', '--extentMemoryLimit', '256']),
  ];
  return new Promise((resolve, reject) => {
    // In memory Azurite writes nothing, but it checks that its (default) location exists: the OS temp dir.
    const child = spawn(process.execPath, args, { cwd: dataDir ?? tmpdir(), stdio: ['pipe', 'pipe', 'pipe'], env: process.env });
    let output = '';
    let settled = false;
    const collect = (s: string): void => {
      output += s;
      const m = /successfully listens on http:\/\/127\.0\.0\.1:(\d+)/.exec(output);
      if (m && !settled) void ready(Number(m[1]));
    };
    child.stdout.setEncoding('utf8').on('data', collect);
    child.stderr.setEncoding('utf8').on('data', collect);
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`${NAME} did not start: ${why}\n--- output ---\n${output.trimEnd() || '(empty)'}`));
    };
    const timer = setTimeout(() => fail(`not listening within ${READY_TIMEOUT_MS / 1000} s`), READY_TIMEOUT_MS);
    const ready = async (actual: number): Promise<void> => {
      // Listening is not yet answering: one unauthenticated request must get an HTTP reply (403).
      try {
        await fetch(`http://127.0.0.1:${actual}/${AZURITE_ACCOUNT}?comp=list`, { signal: AbortSignal.timeout(5_000) });
      } catch (err) {
        fail(`listening on ${actual} but not answering HTTP: ${(err as Error).message}`);
        return;
      }
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // stdin stays open: it is the liveness pipe.
      unrefChild(child);
      resolve({ child, port: actual, output: () => output });
    };
    child.on('error', (err) => fail(`spawn failed: ${err.message}`));
    child.on('exit', (code, signal) => fail(`exited with ${code ?? signal} before it was ready`));
  });
}

/** Starts Azurite's blob service; throws "Azurite did not start: ..." with its output if it cannot. */
export async function startAzurite(opts: AzuriteOptions = {}): Promise<AzuriteProcess> {
  const dataDir: TempDir | undefined = opts.keepData ? createTempDir('kg-azurite-') : undefined;
  let current: Spawned | null;
  try {
    current = await spawnAzurite(opts.port ?? 0, dataDir?.path);
  } catch (err) {
    dataDir?.remove();
    throw err;
  }
  let last = current;
  const port = current.port;
  const handle: AzuriteProcess = {
    port,
    endpoint: `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`,
    account: AZURITE_ACCOUNT,
    key: AZURITE_KEY,
    get running() {
      return current !== null;
    },
    async start() {
      if (current) return;
      current = await spawnAzurite(port, dataDir?.path);
      last = current;
    },
    async stop() {
      const c = current;
      current = null;
      if (c) await stopChild(c.child);
    },
    async dispose() {
      await handle.stop();
      dataDir?.remove();
    },
    output: () => last.output(),
  };
  return handle;
}

/** A real BlobServiceClient for an Azurite endpoint, with the account key. */
export function azuriteServiceClient(emu: AzuriteEndpoint): BlobServiceClient {
  return new BlobServiceClient(emu.endpoint, new StorageSharedKeyCredential(emu.account, emu.key), { retryOptions: { maxTries: 1 } });
}

/** The connection string Azure tools take for this Azurite (`AZURE_STORAGE_CONNECTION_STRING`). */
export function azuriteConnectionString(emu: AzuriteEndpoint): string {
  return `DefaultEndpointsProtocol=http;AccountName=${emu.account};AccountKey=${emu.key};BlobEndpoint=${emu.endpoint};`;
}
