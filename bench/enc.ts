/**
 * In-process ENC: the gateway's ENC path against Node's own AES-256-GCM calls.
 * Runs in a child of its own (see child.ts) on a started gateway whose key is cached.
 */
import { createCipheriv, randomBytes, randomFillSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { envelopeAad, seal } from '../src/crypto/envelope.js';
import { NoncePool } from '../src/crypto/nonce.js';
import { formatReply } from '../src/protocol/reply.js';
import type { RunningGateway } from '../src/serve.js';
import { BENCH_KEY, type EncResult, type EncSizeResult } from './common.js';

const VARIANTS = 16; // distinct plaintexts / request lines, cycled

// Results are folded in here so no call can be optimised away.
let sink = 0;

/** ENC replies that came back as promises (a budget reservation being written); awaited between batches. */
const deferred: Array<Promise<unknown>> = [];

/**
 * Calls `fn` for `ms` milliseconds; returns calls per second. Between batches it
 * lets replies that wait for a budget reservation settle, as a server's event loop
 * does between socket reads, so one store write per 65536 ENC is what is measured,
 * not a loop that never lets the write land. The wait counts in the time.
 */
async function timed(fn: (i: number) => void, ms: number, checkEvery: number): Promise<number> {
  const start = performance.now();
  const end = start + ms;
  let n = 0;
  let now: number;
  do {
    for (let k = 0; k < checkEvery; k++) fn(n++);
    if (deferred.length > 0) await Promise.all(deferred.splice(0));
    now = performance.now();
  } while (now < end);
  return (n * 1000) / (now - start);
}

export async function runEncBench(gateway: RunningGateway, rounds: number, ms: number): Promise<EncResult> {
  const session = gateway.pipeline.open({ transport: 'internal' });
  // What a connection does with a line: the pipeline's outcome, turned into reply text.
  const handleLine = (line: string): string | Promise<string> => {
    const reply = session.handle(line);
    return reply instanceof Promise ? reply.then(formatReply) : formatReply(reply);
  };
  const dek = gateway.cache.peek(BENCH_KEY, 1);
  if (dek === undefined) throw new Error('bench key is not cached');
  // A copy: Node's baseline must not depend on the cache entry staying alive.
  const key = Buffer.from(dek);
  const aad = envelopeAad(BENCH_KEY, 1); // the same AAD seal() binds
  const iv = Buffer.alloc(12);
  const ivPool = Buffer.alloc(4096 * 12);
  let ivAt = ivPool.length;
  const nonces = new NoncePool();

  const sizes: EncSizeResult[] = [];
  const specs = [
    { size: 32, label: '32 B', check: 1024 },
    { size: 64 * 1024, label: '64 KiB', check: 8 },
    { size: 1024 * 1024, label: '1 MiB', check: 1 },
  ];
  const setupOne = async (spec: (typeof specs)[number]) => {
    const plaintexts = Array.from({ length: VARIANTS }, () => randomBytes(spec.size));
    // Built through a Buffer so the strings are flat and not internalized, as a framer's output is.
    const lines = plaintexts.map((p) => Buffer.from(`ENC ${BENCH_KEY} ${p.toString('base64')}`, 'latin1').toString('latin1'));
    // The first ENC of a DEK version reserves its nonce budget in the store (asynchronous);
    // later ones are synchronous cache hits, with one more reservation every 65536 ENC.
    await handleLine(lines[0] as string);
    const first = handleLine(lines[0] as string);
    if (typeof first !== 'string' || !first.startsWith('OK ')) {
      throw new Error(
        `ENC ${spec.label} was not answered synchronously with OK: ${typeof first === 'string' ? first.slice(0, 80) : 'a promise'}`,
      );
    }
    const node = (i: number): void => {
      randomFillSync(iv);
      const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
      cipher.setAAD(aad);
      const body = cipher.update(plaintexts[i & (VARIANTS - 1)] as Buffer);
      const rest = cipher.final();
      sink += body.length + rest.length + cipher.getAuthTag()[0]!;
    };
    const nodePooled = (i: number): void => {
      if (ivAt === ivPool.length) {
        randomFillSync(ivPool);
        ivAt = 0;
      }
      const cipher = createCipheriv('aes-256-gcm', key, ivPool.subarray(ivAt, (ivAt += 12)), { authTagLength: 16 });
      cipher.setAAD(aad);
      const body = cipher.update(plaintexts[i & (VARIANTS - 1)] as Buffer);
      const rest = cipher.final();
      sink += body.length + rest.length + cipher.getAuthTag()[0]!;
    };
    const line = (i: number): void => {
      const reply = handleLine(lines[i & (VARIANTS - 1)] as string);
      // A budget reservation (one store write per 65536 ENC) answers later; timed() awaits it.
      if (typeof reply === 'string') sink += reply.length;
      else deferred.push(reply);
    };
    const sealOnly = (i: number): void => {
      sink += seal({ dek, keyId: BENCH_KEY, version: 1 }, plaintexts[i & (VARIANTS - 1)] as Buffer, nonces).length;
    };
    const result: EncSizeResult = { size: spec.size, label: spec.label, nodeOps: [], nodePooledOps: [], lineOps: [], sealOps: [] };
    sizes.push(result);
    return { spec, node, nodePooled, line, sealOnly, result };
  };
  const setups: Array<Awaited<ReturnType<typeof setupOne>>> = [];
  for (const spec of specs) setups.push(await setupOne(spec));

  // Warm-up (JIT) of every variant, not recorded.
  for (const s of setups) {
    await timed(s.node, ms / 3, s.spec.check);
    await timed(s.nodePooled, ms / 3, s.spec.check);
    await timed(s.line, ms / 3, s.spec.check);
    await timed(s.sealOnly, ms / 3, s.spec.check);
  }
  // Alternating rounds: node, gateway line, seal, node (pooled nonces), node, ...
  for (let r = 0; r < rounds; r++) {
    for (const s of setups) {
      s.result.nodeOps.push(await timed(s.node, ms, s.spec.check));
      s.result.lineOps.push(await timed(s.line, ms, s.spec.check));
      s.result.sealOps.push(await timed(s.sealOnly, ms, s.spec.check));
      s.result.nodePooledOps.push(await timed(s.nodePooled, ms, s.spec.check));
    }
  }
  if (sink === 0) console.error('unexpected: empty sink');
  return { durationMs: ms, sizes };
}
