import { chmod, link, lstat, unlink } from 'node:fs/promises';
import { connect, createServer, isIP, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { formatError } from '../protocol/reply.js';
import type { ClientIdentity } from '../request/context.js';
import { Connection, type ConnectionLimits, type LineHandler } from './connection.js';
import { peerCredOf, peerCredUnavailable } from './peercred.js';

/** Starts serving one accepted connection: the handler for its request lines. */
export type Acceptor = (identity: ClientIdentity) => LineHandler;

/** Where and how the gateway listens. */
export interface ListenOptions extends ConnectionLimits {
  /** Unix socket path, or undefined for none. */
  readonly socketPath?: string;
  /** Unix socket file mode (default 0o600: only the gateway's user). */
  readonly socketMode: number;
  /** Optional plain TCP listener; must be on a loopback address and marked insecure. */
  readonly tcp?: { readonly host: string; readonly port: number; readonly insecure: boolean };
  /** Optional TLS 1.3 listener requiring client certificates (PEM contents, not paths). */
  readonly tls?: { readonly host: string; readonly port: number; readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer };
  /** Most connections open at once across all listeners; more get `ERR THROTTLED` and are closed. */
  readonly maxConnections: number;
}

/** True for 127.0.0.0/8, ::1 and localhost. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

/** The running listeners; `close()` stops accepting and ends open connections. */
export class Listener {
  private readonly servers: Server[] = [];
  private readonly connections = new Map<Socket, Connection>();
  // The socket file this process bound, the only one close() may remove. Inode numbers are
  // reused at once, so the change time (ns) tells a socket bound later at the same path apart.
  private bound: SocketFileId | undefined;
  /** TCP port actually bound (useful with port 0). */
  tcpPort: number | undefined;
  /** TLS port actually bound (useful with port 0). */
  tlsPort: number | undefined;

  private constructor(
    private readonly options: ListenOptions,
    private readonly open: Acceptor,
    private readonly log: Logger,
  ) {}

  static async start(options: ListenOptions, open: Acceptor, log: Logger): Promise<Listener> {
    const listener = new Listener(options, open, log);
    try {
      if (options.socketPath !== undefined) await listener.listenUnix(options.socketPath);
      if (options.tcp !== undefined) await listener.listenTcp(options.tcp.host, options.tcp.port, options.tcp.insecure);
      if (options.tls !== undefined) await listener.listenTls(options.tls);
    } catch (err) {
      await listener.close();
      throw err;
    }
    return listener;
  }

  /** Open connections, bytes read from them, and reply bytes queued for them (not yet taken by the kernel). */
  stats(): { connections: number; bytesRead: number; bytesQueued: number } {
    let bytesRead = 0;
    let bytesQueued = 0;
    for (const socket of this.connections.keys()) {
      bytesRead += socket.bytesRead;
      bytesQueued += socket.writableLength;
    }
    return { connections: this.connections.size, bytesRead, bytesQueued };
  }

  /**
   * Graceful stop: accepts no new connection, reads no new line, answers every
   * request already read, then closes. Connections still busy after `graceMs`
   * (a peer that stops reading, a KMS that hangs) are cut.
   */
  async close(graceMs = 0): Promise<void> {
    const closing = this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    const drained = Promise.all([...this.connections.values()].map((c) => c.drain()));
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
    await Promise.race([drained, grace]);
    clearTimeout(timer);
    for (const socket of this.connections.keys()) socket.destroy();
    await Promise.all(closing);
    await this.removeOwnSocket();
  }

  private newServer(): Server {
    const server = createServer({ pauseOnConnect: false }, (socket) => this.accept(socket, identityOf(socket)));
    server.on('error', (err: Error) => this.log.error({ err: err.message }, 'listener error'));
    this.servers.push(server);
    return server;
  }

  private accept(socket: Socket, identity: ClientIdentity): void {
    if (this.connections.size >= this.options.maxConnections) {
      socket.on('error', () => socket.destroy());
      socket.end(`${formatError('THROTTLED', 'too many connections; try again later')}\n`);
      this.log.warn({ max: this.options.maxConnections }, 'connection refused: at the connection cap');
      return;
    }
    this.connections.set(socket, new Connection(socket, this.open(identity), this.options));
    socket.once('close', () => this.connections.delete(socket));
  }

  private async listenUnix(path: string): Promise<void> {
    await removeStaleSocket(path);
    // Bound under a temporary name, then linked into place: libuv unlinks the name it bound
    // when the server closes, and that must never be a path another process may bind since.
    // link() also refuses to replace a socket a concurrent start put there first.
    const temp = `${path}~`;
    await removeStaleSocket(temp);
    const server = this.newServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(temp, () => {
        server.off('error', reject);
        resolve();
      });
    });
    try {
      // The mode is set before the socket appears at its path.
      await chmod(temp, this.options.socketMode);
      await link(temp, path).catch((err: NodeJS.ErrnoException) => {
        throw err.code === 'EEXIST' ? new Error(`another gateway is already listening on ${path}`, { cause: err }) : err;
      });
    } finally {
      await unlink(temp).catch(() => undefined);
    }
    this.bound = await socketFileId(path);
    const noPeerCred = peerCredUnavailable();
    if (noPeerCred) {
      this.log.warn(
        { reason: noPeerCred },
        'SO_PEERCRED addon unavailable: Unix socket clients are governed by the socket file permissions only (no per-uid policy)',
      );
    }
    this.log.info({ socket: path, mode: this.options.socketMode.toString(8) }, 'listening on unix socket');
  }

  /** Removes the socket file only if it is still the one this process bound (never another gateway's). */
  private async removeOwnSocket(): Promise<void> {
    const path = this.options.socketPath;
    if (path === undefined || this.bound === undefined) return;
    const now = await socketFileId(path);
    if (now !== undefined && now.dev === this.bound.dev && now.ino === this.bound.ino && now.ctimeNs === this.bound.ctimeNs) {
      await unlink(path).catch(() => undefined);
    }
    this.bound = undefined;
  }

  private async listenTcp(host: string, port: number, insecure: boolean): Promise<void> {
    if (!insecure) {
      throw new Error(
        'listen.tcp is plain TCP without TLS: set listen.tcp.insecure: true to accept that (loopback only), or use listen.tls',
      );
    }
    if (!isLoopback(host)) {
      throw new Error(`listen.tcp.host ${host} is not a loopback address; plain TCP is only allowed on loopback`);
    }
    const server = this.newServer();
    this.tcpPort = await bind(server, port, host);
    this.log.warn({ host, port: this.tcpPort }, 'listening on plain TCP without TLS (listen.tcp.insecure): any local process can connect');
  }

  private async listenTls(tls: NonNullable<ListenOptions['tls']>): Promise<void> {
    const server = createTlsServer(
      {
        cert: tls.cert,
        key: tls.key,
        ca: tls.ca,
        minVersion: 'TLSv1.3',
        requestCert: true,
        rejectUnauthorized: true,
        handshakeTimeout: 10_000,
      },
      (socket) => this.accept(socket, tlsIdentityOf(socket)),
    );
    server.on('error', (err: Error) => this.log.error({ err: err.message }, 'listener error'));
    server.on('tlsClientError', (err, socket) => {
      this.log.warn({ err: err.message, address: socket.remoteAddress }, 'TLS handshake refused');
    });
    this.servers.push(server);
    this.tlsPort = await bind(server, tls.port, tls.host);
    this.log.info({ host: tls.host, port: this.tlsPort }, 'listening on TLS 1.3 with client certificates');
  }
}

interface SocketFileId {
  readonly dev: bigint;
  readonly ino: bigint;
  readonly ctimeNs: bigint;
}

/** What identifies the socket file at `path` now, or undefined when there is none. */
async function socketFileId(path: string): Promise<SocketFileId | undefined> {
  const stat = await lstat(path, { bigint: true }).catch(() => undefined);
  return stat?.isSocket() ? { dev: stat.dev, ino: stat.ino, ctimeNs: stat.ctimeNs } : undefined;
}

/** Removes a socket file left by a gateway that died; refuses if one still answers there. */
async function removeStaleSocket(path: string): Promise<void> {
  const stat = await lstat(path).catch(() => undefined);
  if (stat === undefined) return;
  if (!stat.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`another gateway is already listening on ${path}`);
  await unlink(path);
}

/** What a plain socket says about its peer: SO_PEERCRED on a Unix socket, the address on TCP. */
function identityOf(socket: Socket): ClientIdentity {
  if (socket.remoteAddress === undefined) {
    const peer = peerCredOf(socket);
    return peer ? { transport: 'unix', peer } : { transport: 'unix' };
  }
  return { transport: 'tcp', address: socket.remoteAddress };
}

/** A verified client certificate's identity: its subject CN, else its first DNS or URI SAN. */
export function certificateIdentity(cert: { subject?: { CN?: string | string[] }; subjectaltname?: string }): string | undefined {
  const cn = cert.subject?.CN;
  if (typeof cn === 'string' && cn.length > 0) return cn;
  if (Array.isArray(cn) && typeof cn[0] === 'string') return cn[0];
  const san = cert.subjectaltname?.split(', ').find((s) => s.startsWith('DNS:') || s.startsWith('URI:'));
  return san?.slice(4);
}

function tlsIdentityOf(socket: TLSSocket): ClientIdentity {
  const cert = socket.getPeerCertificate();
  const id = socket.authorized && cert ? certificateIdentity(cert) : undefined;
  return { transport: 'tls', ...(socket.remoteAddress ? { address: socket.remoteAddress } : {}), ...(id ? { cert: id } : {}) };
}

function bind(server: Server, port: number, host: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}
