import { connect, type Socket } from 'node:net';
import { DEFAULT_SOCKET_PATH } from '../config/defaults.js';
import { LineFramer } from '../protocol/framer.js';
import { isErrorCode, type ErrorCode } from '../protocol/errors.js';

/** How to reach the gateway. */
export interface ClientOptions {
  /** Unix socket path (default: `$KMSGW_SOCKET`, else {@link DEFAULT_SOCKET_PATH}). */
  readonly socketPath?: string;
  /** TCP instead of a Unix socket. */
  readonly tcp?: { readonly host: string; readonly port: number };
  /** Fail a request with no reply after this many ms (default 10 s; 0: never). */
  readonly timeoutMs?: number;
  /** Longest reply line accepted (default 64 MiB). */
  readonly maxReplyBytes?: number;
}

/** The gateway answered `ERR <code> <text>`, or could not be reached (`code` UNAVAILABLE). */
export class KmsgwError extends Error {
  override readonly name = 'KmsgwError';
  constructor(
    readonly code: ErrorCode | 'UNAVAILABLE' | 'PROTOCOL',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The socket path clients use: `$KMSGW_SOCKET`, else {@link DEFAULT_SOCKET_PATH}. */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  return env['KMSGW_SOCKET'] || DEFAULT_SOCKET_PATH;
}

interface Waiter {
  resolve(payload: string): void;
  reject(err: Error): void;
}

/** A pipelining client: requests may be issued without waiting; replies match in order. */
export interface KmsgwClient {
  /** Sends one raw request line and resolves with the `OK` payload. */
  request(line: string): Promise<string>;
  ping(): Promise<void>;
  get(keyId: string): Promise<Buffer>;
  enc(keyId: string, plaintext: Uint8Array, aad?: Uint8Array): Promise<Buffer>;
  dec(keyId: string, envelope: Uint8Array, aad?: Uint8Array): Promise<Buffer>;
  /** `kek`: one KEK URI or several, comma-separated (each DEK version is wrapped under every one). */
  create(keyId: string, kek?: string): Promise<number>;
  rotate(keyId: string, kek?: string): Promise<number>;
  destroy(keyId: string, version: number): Promise<number>;
  /** Wraps the key's versions (or `keyId@v`) under exactly these KEKs; resolves with how many changed. */
  rewrap(keyId: string, kek: string): Promise<number>;
  /** Adds KEKs to the newest version, `keyId@v`, or (`all`) every enabled version; resolves with how many changed. */
  addKek(keyId: string, kek: string, all?: boolean): Promise<number>;
  /** Removes KEKs likewise; a version keeps at least one. */
  removeKek(keyId: string, kek: string, all?: boolean): Promise<number>;
  /** Seals every enabled version to the gateway's recovery recipients; resolves with how many were sealed. */
  addRecovery(keyId: string): Promise<number>;
  info(keyId: string): Promise<unknown>;
  list(prefix?: string): Promise<string[]>;
  close(): Promise<void>;
}

/** Decodes into `Buffer.alloc` memory (never Node's shared pool), so the caller can zeroize it alone. */
function decodeSecret(text: string): Buffer {
  const out = Buffer.alloc(Buffer.byteLength(text, 'base64'));
  out.write(text, 'base64');
  return out;
}

function b64(data: Uint8Array): string {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64');
}

/** Connects and resolves once the connection is up. */
export async function createClient(options: ClientOptions = {}): Promise<KmsgwClient> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const socket: Socket = options.tcp ? connect(options.tcp.port, options.tcp.host) : connect(options.socketPath ?? defaultSocketPath());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', (err) =>
      reject(
        new KmsgwError('UNAVAILABLE', `cannot reach the gateway: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }),
      ),
    );
  });
  socket.setNoDelay(true);

  const waiters: Waiter[] = [];
  let failure: KmsgwError | undefined;
  const failAll = (err: KmsgwError) => {
    failure ??= err;
    for (const w of waiters.splice(0)) w.reject(err);
  };
  const framer = new LineFramer(options.maxReplyBytes ?? 64 * 1024 * 1024);
  const sink = {
    line(text: string) {
      const waiter = waiters.shift();
      if (!waiter) return failAll(new KmsgwError('PROTOCOL', 'reply without a request'));
      if (text === 'OK') return waiter.resolve('');
      if (text.startsWith('OK ')) return waiter.resolve(text.slice(3));
      const m = /^ERR ([A-Z_]+) ?(.*)$/.exec(text);
      if (m && isErrorCode(m[1] as string)) return waiter.reject(new KmsgwError(m[1] as ErrorCode, m[2] || (m[1] as string)));
      waiter.reject(new KmsgwError('PROTOCOL', 'malformed reply'));
    },
    tooLarge() {
      failAll(new KmsgwError('PROTOCOL', 'reply too large'));
      socket.destroy();
    },
  };
  socket.on('data', (chunk: Buffer) => framer.push(chunk, sink));
  socket.on('error', (err) => failAll(new KmsgwError('UNAVAILABLE', `connection failed: ${err.message}`, { cause: err })));
  socket.on('close', () => failAll(new KmsgwError('UNAVAILABLE', 'connection closed by the gateway')));

  const request = (line: string): Promise<string> => {
    if (failure) return Promise.reject(failure);
    return new Promise<string>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const settle =
        <T>(fn: (v: T) => void) =>
        (v: T) => {
          clearTimeout(timer);
          fn(v);
        };
      waiters.push({ resolve: settle(resolve), reject: settle(reject) });
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          const err = new KmsgwError('UNAVAILABLE', `no reply within ${timeoutMs} ms`);
          failAll(err);
          socket.destroy();
        }, timeoutMs);
      }
      socket.write(`${line}\n`);
    });
  };
  const withOptional = (...parts: Array<string | undefined>) => parts.filter((p) => p !== undefined).join(' ');

  return {
    request,
    ping: async () => {
      await request('PING');
    },
    get: async (keyId) => decodeSecret(await request(`GET ${keyId}`)),
    enc: async (keyId, plaintext, aad) => Buffer.from(await request(withOptional('ENC', keyId, b64(plaintext), aad && b64(aad))), 'base64'),
    dec: async (keyId, envelope, aad) => decodeSecret(await request(withOptional('DEC', keyId, b64(envelope), aad && b64(aad)))),
    create: async (keyId, kek) => Number(await request(withOptional('CREATE', keyId, kek))),
    rotate: async (keyId, kek) => Number(await request(withOptional('ROTATE', keyId, kek))),
    rewrap: async (keyId, kek) => Number(await request(`REWRAP ${keyId} ${kek}`)),
    addKek: async (keyId, kek, all) => Number(await request(withOptional('ADDKEK', keyId, kek, all === true ? 'ALL' : undefined))),
    removeKek: async (keyId, kek, all) => Number(await request(withOptional('REMOVEKEK', keyId, kek, all === true ? 'ALL' : undefined))),
    addRecovery: async (keyId) => Number(await request(`ADDRECOVERY ${keyId}`)),
    destroy: async (keyId, version) => Number(await request(`DESTROY ${keyId}@${version}`)),
    info: async (keyId) => JSON.parse(await request(`INFO ${keyId}`)) as unknown,
    list: async (prefix) => JSON.parse(await request(withOptional('LIST', prefix))) as string[],
    close: () =>
      new Promise<void>((resolve) => {
        if (socket.destroyed) return resolve();
        socket.once('close', () => resolve());
        socket.end();
      }),
  };
}
