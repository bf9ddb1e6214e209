import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { duplexPair, type Duplex } from 'node:stream';
import { createSecureContext, createServer as createTlsServer, Server as TlsServer } from 'node:tls';
import type { Logger } from '../log/logger.js';
import { vaultError, type VaultReply } from './errors.js';
import { route, type KeyRoute, type Mounts } from './routes.js';

/** What the front door needs; the handlers behind routes come from the assembly. */
export interface VaultServerOptions {
  readonly host: string;
  readonly port: number;
  readonly mounts: Mounts;
  /** TLS 1.3 with this certificate; absent: plain HTTP (the assembly allows it on loopback only). */
  readonly tls?: { readonly cert: Buffer; readonly key: Buffer };
  /** Largest request body in bytes; past it 413 in Vault's shape. @default 1048576 */
  readonly maxBodyBytes?: number;
  /** Answers one routed request (health and mount info are answered here). */
  readonly handle?: (route: KeyRoute, body: unknown, request: VaultRequest) => Promise<VaultReply>;
  /**
   * Sees each reply the server makes itself (health, mount info, every refusal before a handler)
   * before it is sent, and may replace it: the assembly audits them there.
   */
  readonly settle?: (what: Answered, reply: VaultReply, request: VaultRequest) => Promise<VaultReply>;
  readonly log: Logger;
}

/** Who sent a request, as far as the server knows. */
export interface VaultRequest {
  readonly token: string | undefined;
  readonly address: string | undefined;
}

/** What a reply the server makes itself is recorded as: sys/health, sys/mounts/<m>, or a refusal. */
export type Answered = 'HEALTH' | 'MOUNT' | 'invalid';

export interface VaultServer {
  readonly port: number;
  /** New certificate and key (a reload of `listen.tls`) for the next handshakes; nothing on plain HTTP. */
  setTlsCredentials(tls: { readonly cert: Buffer; readonly key: Buffer }): void;
  close(): Promise<void>;
}

const DEFAULT_MAX_BODY = 1024 * 1024;

/** The Vault version kmsgw reports: clients check only that there is one. */
const VERSION = '1.15.0+kmsgw';

/**
 * Starts the Vault-compatible HTTP listener (plain HTTP here; TLS comes from the assembly).
 * Every failure is a Vault-shaped JSON reply; a handler's throw is a 500 and the server goes on.
 */
export async function startVaultServer(options: VaultServerOptions): Promise<VaultServer> {
  const listener: RequestListener = (req, res) => {
    const connection = connections.get(req.socket);
    res.once('finish', () => connection?.nextRequest());
    void answer(req, options, connection?.address)
      .catch((err: unknown) => {
        options.log.warn({ err: (err as Error).message }, 'vault request failed');
        return vaultError(500, 'internal error');
      })
      .then((reply) => send(res, reply, req.method === 'HEAD'));
  };
  // The HTTP server never listens itself: it is handed each connection through `acceptList`.
  const http = createServer(
    { requestTimeout: 10_000, headersTimeout: 10_000, connectionsCheckingInterval: 1_000, maxHeaderSize: 16 * 1024 },
    listener,
  );
  const connections = new WeakMap<Duplex, { nextRequest(): void; address: string | undefined }>();
  const accept = (socket: Socket): void => {
    const { inner, nextRequest } = acceptList(socket);
    connections.set(inner, { nextRequest, address: socket.remoteAddress });
    http.emit('connection', inner);
  };
  const server: Server =
    options.tls === undefined
      ? createTcpServer(accept)
      : createTlsServer({ cert: options.tls.cert, key: options.tls.key, minVersion: 'TLSv1.3' }, accept);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // What a listening HTTP server does on 'listening': track connections and enforce the header and request timeouts.
  http.emit('listening');
  // The idle limit for connections between requests (keep-alive), the HTTP server's own being bypassed here.
  http.keepAliveTimeout = 5_000;
  return {
    port: (server.address() as AddressInfo).port,
    setTlsCredentials: (tls) => {
      if (!(server instanceof TlsServer)) return;
      const context = { cert: tls.cert, key: tls.key, minVersion: 'TLSv1.3' } as const;
      createSecureContext(context); // throws on unusable PEM before anything changes
      server.setSecureContext(context);
    },
    close: () =>
      new Promise<void>((done) => {
        server.close(() => done());
        http.close();
        http.closeAllConnections();
      }),
  };
}

/**
 * Vault clients (hvac, Vault's own) send `LIST /v1/...`, a method Node's HTTP parser refuses. The
 * connection's bytes pass through here, and a request line starting `LIST ` at the start of a
 * request becomes `LOCK ` (same length), which `route` reads as LIST. Only the first bytes after
 * the previous response was sent are looked at, so a body is never altered.
 */
function acceptList(socket: Socket): { inner: Duplex; nextRequest: () => void } {
  const [inner, outer] = duplexPair();
  let atStart = true;
  socket.on('data', (chunk: Buffer) => {
    if (atStart && chunk.length >= 5 && chunk.toString('latin1', 0, 5) === 'LIST ') chunk.write('LOCK', 0, 'latin1');
    atStart = false;
    if (!outer.write(chunk)) socket.pause();
  });
  outer.on('drain', () => socket.resume());
  outer.on('data', (chunk: Buffer) => {
    if (!socket.write(chunk)) outer.pause();
  });
  socket.on('drain', () => outer.resume());
  socket.on('end', () => outer.end());
  outer.on('end', () => socket.end());
  socket.on('error', () => inner.destroy());
  socket.on('close', () => inner.destroy());
  inner.on('close', () => socket.destroy());
  return {
    inner,
    nextRequest: () => {
      atStart = true;
    },
  };
}

async function answer(req: IncomingMessage, options: VaultServerOptions, address: string | undefined): Promise<VaultReply> {
  const token = req.headers['x-vault-token'];
  const request: VaultRequest = { token: typeof token === 'string' ? token : undefined, address };
  const own = (what: Answered, reply: VaultReply): Promise<VaultReply> =>
    options.settle === undefined ? Promise.resolve(reply) : options.settle(what, reply, request);
  const method = req.method === 'LOCK' ? 'LIST' : (req.method ?? 'GET');
  const routed = route(method, req.url ?? '/', options.mounts);
  const body = await readBody(req, options.maxBodyBytes ?? DEFAULT_MAX_BODY);
  if (typeof body === 'object' && body !== null && 'tooLarge' in body) return own('invalid', vaultError(413, 'request body too large'));
  if (body === INVALID) return own('invalid', vaultError(400, 'failed to parse JSON input'));
  if (routed.kind === 'none') return own('invalid', routed.status === 404 ? vaultError(404) : vaultError(405, 'unsupported operation'));
  if (routed.kind === 'health') {
    return own('HEALTH', {
      status: 200,
      body: { initialized: true, sealed: false, standby: false, version: VERSION, cluster_name: 'kmsgw' },
    });
  }
  if (routed.kind === 'mount-info') {
    const kv = options.mounts.kv.includes(routed.mount);
    return own('MOUNT', {
      status: 200,
      body: { data: kv ? { type: 'kv', options: { version: '2' } } : { type: 'transit', options: null } },
    });
  }
  // Vault Enterprise namespaces: kmsgw has one key space, so another namespace is refused, not mixed into it.
  const namespace = req.headers['x-vault-namespace'];
  if (namespace !== undefined && namespace !== '' && namespace !== 'root' && namespace !== 'root/') {
    return own('invalid', vaultError(400, 'namespaces are not supported: kmsgw serves the root namespace only'));
  }
  if (options.handle === undefined) return vaultError(501, 'not implemented yet');
  return options.handle(routed, body, request);
}

const INVALID = Symbol('invalid JSON');

/** The JSON body (undefined when empty), INVALID, or `{ tooLarge }` past the cap (the rest is not read). */
async function readBody(req: IncomingMessage, max: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      req.destroy();
      return { tooLarge: true };
    }
    chunks.push(chunk);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    return INVALID;
  }
}

function send(res: ServerResponse, reply: VaultReply, head: boolean): void {
  if (res.destroyed) return;
  const text = reply.status === 204 ? '' : JSON.stringify(reply.body);
  res.writeHead(reply.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(head ? undefined : text);
}
