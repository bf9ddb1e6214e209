import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { pino } from 'pino';
import { DEFAULT_LOADERS } from '../../adapters/registry.js';
import { validateConfig } from '../../src/config/load.js';
import type { Config, ConfigInput } from '../../src/config/schema.js';
import { startGateway, type RunningGateway, type StartOptions } from '../../src/serve.js';
import { afterEach, expect } from 'vitest';
import { fakeKms, fakeLoader } from './fake-adapter.js';

export interface TestGateway extends RunningGateway {
  readonly dir: string;
  readonly adapterCalls: Array<{ op: string; kek: string }>;
  readonly logLines: string[];
}

/** The config `startTestGateway(dir, overrides)` runs with (reload tests build the next one with it). */
export function testGatewayConfig(dir: string, overrides: ConfigInput = {}): Config {
  return validateConfig(
    {
      dataDir: join(dir, 'data'),
      listen: { socket: { path: join(dir, 'gw.sock') } },
      log: { level: 'debug' },
      ...overrides,
      keys: { autoCreate: true, allowedKeks: ['*'], ...overrides.keys },
      // The canary is off unless a test turns it on: its wrap and unwrap calls would blur call counts.
      kms: { canaryIntervalMs: 0, ...overrides.kms, adapters: { local: { enabled: true }, ...overrides.kms?.adapters } },
    },
    'test',
  );
}

/**
 * Starts a real gateway on a Unix socket in `dir`, with the local and fake adapters and captured logs.
 * Unlike the product defaults, local KEKs are on and any KEK may be named (`keys.allowedKeks: ['*']`),
 * so tests may use `fake://` and `local://` KEKs freely; `overrides.keys` and `overrides.kms` are
 * merged into these field by field (pass `allowedKeks: undefined` for the product default).
 */
export async function startTestGateway(
  dir: string,
  overrides: ConfigInput = {},
  options: Omit<StartOptions, 'logger' | 'baseDir'> = {},
): Promise<TestGateway> {
  const config = testGatewayConfig(dir, overrides);
  const logLines: string[] = [];
  const logger = pino({ level: config.log.level }, { write: (line: string) => void logLines.push(line) });
  const adapterCalls: Array<{ op: string; kek: string }> = [];
  const running = await startGateway(config, {
    baseDir: dir,
    logger,
    loaders: { ...DEFAULT_LOADERS, fake: fakeLoader },
    onAdapterCall: (op, kek) => adapterCalls.push({ op, kek }),
    ...options,
  });
  return { ...running, dir, adapterCalls, logLines };
}

/** A raw protocol connection: write bytes, read reply lines. */
export interface RawConn {
  readonly socket: Socket;
  write(data: string | Buffer): void;
  /** Resolves with the next `n` reply lines (without LF). */
  lines(n: number, timeoutMs?: number): Promise<string[]>;
  /** One request, one reply. */
  ask(line: string): Promise<string>;
  /** Resolves when the server closes the connection. */
  closed(): Promise<void>;
  close(): void;
}

export async function rawConnect(path: string): Promise<RawConn> {
  const socket = connect(path);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  let buffered = '';
  const got: string[] = [];
  let waiter: (() => void) | undefined;
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    let lf: number;
    while ((lf = buffered.indexOf('\n')) !== -1) {
      got.push(buffered.slice(0, lf));
      buffered = buffered.slice(lf + 1);
    }
    waiter?.();
  });
  const isClosed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  const lines = async (n: number, timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    while (got.length < n) {
      if (Date.now() > deadline) throw new Error(`timed out with ${got.length}/${n} lines`);
      await Promise.race([new Promise<void>((r) => (waiter = r)), isClosed, new Promise((r) => setTimeout(r, 50))]);
      if (socket.destroyed && got.length < n) throw new Error(`connection closed after ${got.length}/${n} lines`);
    }
    return got.splice(0, n);
  };
  return {
    socket,
    write: (data) => void socket.write(data),
    lines,
    ask: async (line) => {
      socket.write(`${line}\n`);
      return (await lines(1))[0] as string;
    },
    closed: () => isClosed,
    close: () => socket.destroy(),
  };
}

/**
 * A list to push started gateways into; each test's gateways are closed after it
 * (and the fake KMS reset), whether it passed or not.
 */
export function useRunningGateways(): TestGateway[] {
  const running: TestGateway[] = [];
  afterEach(async () => {
    fakeKms.reset();
    await Promise.all(running.splice(0).map((g) => g.close()));
  });
  return running;
}

/** Standard base64 of a UTF-8 string, as request arguments want it. */
export const b64 = (s: string): string => Buffer.from(s).toString('base64');

/** Asserts an `OK <payload>` reply and returns the payload. */
export function okPayload(reply: string): string {
  expect(reply).toMatch(/^OK /);
  return reply.slice(3);
}
