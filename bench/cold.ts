/**
 * Cold keys and memory (issue 15), in a child of its own against LocalStack's KMS:
 * - 1,000 concurrent GETs of one cold key: how many KMS unwraps (target: exactly one);
 * - 1,000 distinct cold keys under a LocalStack KEK, all asked at once: throughput, unwraps, and
 *   the most KMS calls in flight (bounded by kms.maxConcurrent);
 * - cached GET (in process) against a direct `Decrypt` to LocalStack from Node (target ≥ 100×);
 * - RSS with 100,000 cached DEKs above an empty cache (aim ≤ 64 MiB), and RSS before and after a
 *   mixed GET/ENC/DEC run (no growth).
 */
import { CreateKeyCommand, DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { randomFillSync } from 'node:crypto';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { startGateway, type RunningGateway } from '../src/serve.js';

export interface ColdResult {
  readonly oneKeyConcurrentGets: number;
  readonly oneKeyUnwraps: number;
  readonly distinctKeys: number;
  readonly distinctSeconds: number;
  readonly distinctUnwraps: number;
  readonly maxConcurrent: number;
  readonly peakInFlight: number;
  readonly cachedGetOps: number;
  readonly directDecryptOps: number;
  readonly cachedDeks: number;
  readonly rssEmptyMiB: number;
  readonly rssFullMiB: number;
  readonly mixedSeconds: number;
  readonly rssMixedStartMiB: number;
  readonly rssMixedEndMiB: number;
  /** JS heap in use plus external memory (Buffers), after a full GC: what the process holds, unlike RSS. */
  readonly heldMixedStartMiB: number;
  readonly heldMixedEndMiB: number;
}

const MiB = 1024 * 1024;

function rss(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss / MiB;
}

/** Heap in use + external after a full GC: what the process still holds (RSS keeps freed pages). */
function held(): number {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return (m.heapUsed + m.external) / MiB;
}

async function opsFor(ms: number, op: () => unknown): Promise<number> {
  const end = performance.now() + ms;
  let n = 0;
  const t0 = performance.now();
  while (performance.now() < end) {
    for (let i = 0; i < 64; i++) {
      const r = op();
      if (r instanceof Promise) await r;
    }
    n += 64;
  }
  return n / ((performance.now() - t0) / 1000);
}

export async function runColdBench(dir: string, endpoint: string, mixedSeconds: number): Promise<ColdResult> {
  const sdk = new KMSClient({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
  const key = await sdk.send(new CreateKeyCommand({ Description: 'kmsgw bench' }));
  const kek = `aws-kms://${key.KeyMetadata?.Arn as string}`;
  process.env['AWS_ACCESS_KEY_ID'] ??= 'test';
  process.env['AWS_SECRET_ACCESS_KEY'] ??= 'test';
  const unwraps = { n: 0 };
  const config = validateConfig(
    {
      dataDir: dir,
      listen: { socket: { path: join(dir, 'cold.sock') } },
      keys: { autoCreate: false, defaultKek: kek },
      // LocalStack answers a burst far slower than a cloud KMS: a long deadline measures the queue, not timeouts.
      kms: { canaryIntervalMs: 0, timeoutMs: 60_000, adapters: { 'aws-kms': { endpoint, region: 'us-east-1' } } },
      cache: { maxEntries: 200_000 },
      log: { level: 'silent' },
      ops: { metrics: false },
    },
    'bench',
  );
  const gw: RunningGateway = await startGateway(config, { onAdapterCall: (op) => void (op === 'unwrap' && unwraps.n++) });
  try {
    const session = gw.pipeline.open({ transport: 'internal' });
    const ask = async (line: string): Promise<string> => {
      const r = await session.handle(line);
      if (!r.ok) throw new Error(`${line.slice(0, 40)}: ${r.code} ${r.text}`);
      return r.payload;
    };

    // One cold key, 1,000 GETs at once.
    await ask('CREATE cold/one');
    gw.cache.clear();
    unwraps.n = 0;
    const sessions = Array.from({ length: 1000 }, () => gw.pipeline.open({ transport: 'internal' }));
    await Promise.all(sessions.map((s) => s.handle('GET cold/one')));
    const oneKeyUnwraps = unwraps.n;

    // 1,000 distinct cold keys at once.
    const ids = Array.from({ length: 1000 }, (_, i) => `cold/k${i}`);
    for (let i = 0; i < ids.length; i += 50) await Promise.all(ids.slice(i, i + 50).map((id) => ask(`CREATE ${id}`)));
    gw.cache.clear();
    unwraps.n = 0;
    gw.kmsLimit.peak = 0;
    const t0 = performance.now();
    await Promise.all(ids.map((id, i) => (sessions[i] as typeof session).handle(`GET ${id}`)));
    const distinctSeconds = (performance.now() - t0) / 1000;
    const distinctUnwraps = unwraps.n;
    const peakInFlight = gw.kmsLimit.peak;

    // Cached GET against a direct Decrypt.
    await ask('GET cold/one');
    const cachedGetOps = await opsFor(1000, () => session.handle('GET cold/one'));
    const blob = (await sdk.send(new EncryptCommand({ KeyId: key.KeyMetadata?.KeyId, Plaintext: Buffer.alloc(32) }))).CiphertextBlob;
    let direct = 0;
    const d0 = performance.now();
    while (performance.now() - d0 < 2000) {
      await sdk.send(new DecryptCommand({ CiphertextBlob: blob }));
      direct++;
    }
    const directDecryptOps = direct / ((performance.now() - d0) / 1000);

    // Memory: 100,000 cached DEKs above an empty cache.
    gw.cache.clear();
    const rssEmptyMiB = rss();
    const dek = Buffer.alloc(32);
    for (let i = 0; i < 100_000; i++) {
      const copy = Buffer.alloc(32);
      randomFillSync(dek);
      dek.copy(copy);
      gw.cache.seed(`mem/${i}`, 1, { dek: copy, keks: [kek] });
    }
    const rssFullMiB = rss();
    gw.cache.clear();

    // A mixed run: GET, ENC and DEC of 1,000 keys; RSS after a warm-up and at the end.
    const env = await ask(`ENC cold/one ${Buffer.alloc(32, 1).toString('base64')}`);
    const lines = ids.map((id) => `GET ${id}`);
    let i = 0;
    const mixed = () => {
      i++;
      if (i % 3 === 0) return session.handle(`ENC cold/k${i % 1000} ${Buffer.alloc(32, i & 0xff).toString('base64')}`);
      if (i % 3 === 1) return session.handle(`DEC cold/one ${env}`);
      return session.handle(lines[i % 1000] as string);
    };
    await opsFor(5000, mixed);
    const rssMixedStartMiB = rss();
    const heldMixedStartMiB = held();
    await opsFor(mixedSeconds * 1000, mixed);
    const rssMixedEndMiB = rss();
    const heldMixedEndMiB = held();

    return {
      oneKeyConcurrentGets: 1000,
      oneKeyUnwraps,
      distinctKeys: ids.length,
      distinctSeconds,
      distinctUnwraps,
      maxConcurrent: config.kms.maxConcurrent,
      peakInFlight,
      cachedGetOps,
      directDecryptOps,
      cachedDeks: 100_000,
      rssEmptyMiB,
      rssFullMiB,
      mixedSeconds,
      rssMixedStartMiB,
      rssMixedEndMiB,
      heldMixedStartMiB,
      heldMixedEndMiB,
    };
  } finally {
    await gw.close();
    sdk.destroy();
  }
}
