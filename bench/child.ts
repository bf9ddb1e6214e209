/**
 * Benchmark child process. Roles (argv[2]):
 *   gateway <dir>  a real gateway (startGateway, dev config, temp dataDir) on <dir>/kmsgw.sock
 *   gateway-nometrics <dir>  the same with `ops.metrics: false` (the metrics A/B)
 *   bare    <dir>  a bare Node server on <dir>/bare.sock: answers every line with a fixed 45-byte line
 *   enc     <dir> <rounds> <ms>  in-process ENC comparison; posts the result and exits
 *   get-ab  <dir> <rounds> <ms>  in-process cached GET, metrics on vs off; posts the result and exits
 *   cold    <dir> <endpoint> <mixed s>  cold keys against LocalStack's KMS, and memory (bench/cold.ts)
 * Server roles post { type: 'ready', socketPath } over IPC and stop on { type: 'stop' }
 * or when the parent goes away.
 */
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { validateConfig } from '../src/config/load.js';
import { startGateway, type RunningGateway } from '../src/serve.js';
import { BARE_REPLY, BENCH_KEY, type ChildMessage, type ParentMessage } from './common.js';
import { runColdBench } from './cold.js';
import { runEncBench } from './enc.js';
import { runInProcessGetAb } from './metrics-ab.js';

const [role, dir, roundsArg, msArg] = process.argv.slice(2);
if (role === undefined || dir === undefined || typeof process.send !== 'function') {
  console.error('bench/child: run by bench/run.js only');
  process.exit(2);
}

function send(message: ChildMessage): void {
  process.send?.(message);
}

async function startBenchGateway(dataDir: string, metrics = true): Promise<RunningGateway> {
  const config = validateConfig(
    {
      keys: { autoCreate: true },
      kms: { adapters: { local: { enabled: true } } },
      dataDir,
      listen: { socket: { path: join(dataDir, 'kmsgw.sock') } },
      log: { level: 'silent' },
      ops: { metrics },
    },
    'bench',
  );
  const running = await startGateway(config);
  // Create the key and cache its DEK, so everything measured is a cache hit.
  const session = running.pipeline.open({ transport: 'internal' });
  const reply = await session.handle(`GET ${BENCH_KEY}`);
  if (!reply.ok) throw new Error(`warm-up GET failed: ${reply.code} ${reply.text}`);
  if (session.handle(`GET ${BENCH_KEY}`) instanceof Promise) throw new Error('second GET was not served from cache');
  return running;
}

/** Bare baseline: splits on LF (indexOf, as LineFramer does) and answers each line. */
async function startBare(path: string): Promise<{ close(): Promise<void> }> {
  // Pre-built replies for up to 1024 lines per chunk; more lines get several writes.
  const MAX = 1024;
  const replies = Buffer.alloc(BARE_REPLY.length * MAX);
  for (let i = 0; i < MAX; i++) BARE_REPLY.copy(replies, i * BARE_REPLY.length);
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      let lines = 0;
      let at = chunk.indexOf(0x0a);
      while (at !== -1) {
        lines++;
        at = chunk.indexOf(0x0a, at + 1);
      }
      while (lines > 0) {
        const n = lines > MAX ? MAX : lines;
        socket.write(replies.subarray(0, n * BARE_REPLY.length));
        lines -= n;
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return {
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

async function main(): Promise<void> {
  if (role === 'enc') {
    const running = await startBenchGateway(join(dir as string, 'enc'));
    try {
      const result = await runEncBench(running, Number(roundsArg), Number(msArg));
      send({ type: 'enc-result', result });
    } finally {
      await running.close();
    }
    process.disconnect?.();
    return;
  }

  if (role === 'cold') {
    send({ type: 'cold-result', result: await runColdBench(join(dir as string, 'cold'), roundsArg as string, Number(msArg)) });
    process.disconnect?.();
    return;
  }

  if (role === 'get-ab') {
    const on = await startBenchGateway(join(dir as string, 'ab-on'));
    const off = await startBenchGateway(join(dir as string, 'ab-off'), false);
    try {
      send({ type: 'get-ab-result', result: await runInProcessGetAb(on, off, Number(roundsArg), Number(msArg)) });
    } finally {
      await Promise.all([on.close(), off.close()]);
    }
    process.disconnect?.();
    return;
  }

  let close: () => Promise<void>;
  let socketPath: string;
  if (role === 'gateway' || role === 'gateway-nometrics') {
    const running = await startBenchGateway(join(dir as string, role), role === 'gateway');
    socketPath = running.socketPath as string;
    close = () => running.close();
  } else if (role === 'bare') {
    socketPath = join(dir as string, 'bare.sock');
    const bare = await startBare(socketPath);
    close = () => bare.close();
  } else {
    throw new Error(`unknown role ${role}`);
  }

  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await close().catch(() => undefined);
    // process.exit (not a natural drain) so a --cpu-prof profile is written right away.
    process.exit(0);
  };
  process.on('message', (message: ParentMessage) => {
    if (message.type === 'stop') void stop();
    else if (message.type === 'cpu') {
      const { user, system } = process.cpuUsage();
      send({ type: 'cpu', us: user + system });
    }
  });
  process.on('disconnect', () => void stop());
  send({ type: 'ready', socketPath });
}

main().catch((err: unknown) => {
  send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  process.exit(1);
});
