import { chmod, link, lstat, unlink } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { createSecureContext, createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import type { Logger } from 'pino';
import { formatError } from '../protocol/reply.js';
import type { ClientIdentity } from '../request/context.js';
import { LimitedWarnings } from '../log/limited.js';
import { identityOf, isLoopback, peerOf, tlsIdentityOf } from './identity.js';
import { Connection, type BufferBudget, type ConnectionLimits, type LineHandler } from './connection.js';
import { peerCredUnavailable } from './peercred.js';

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
  /**
   * Most connections open at once from one peer (a Unix uid, a certificate identity, a TCP
   * address; Unix clients without peer credentials count as one peer).
   */
  readonly maxConnectionsPerPeer: number;
  /** Most bytes of unfinished request lines held across all connections; the connection that passes it is cut. */
  readonly maxBufferedBytes: number;
}

/** The limits `reconfigure` changes. */
type ReloadableLimits = ConnectionLimits & Pick<ListenOptions, 'maxConnections' | 'maxConnectionsPerPeer' | 'maxBufferedBytes'>;

/** The running listeners; `close()` stops accepting and ends open connections. */
export class Listener {
  private readonly servers: Server[] = [];
  private readonly connections = new Map<Socket, Connection>();
  private readonly perPeer = new Map<string, number>();
  private readonly refused = new Set<Socket>();
  private readonly buffered: BufferBudget;
  private readonly warnings: LimitedWarnings;
  // The socket file this process bound, the only one close() may remove. Inode numbers are
  // reused at once, so the change time (ns) tells a socket bound later at the same path apart.
  private bound: SocketFileId | undefined;
  private tlsServer: TlsServer | undefined;
  /** TCP port actually bound (useful with port 0). */
  tcpPort: number | undefined;
  /** TLS port actually bound (useful with port 0). */
  tlsPort: number | undefined;

  private constructor(
    private options: ListenOptions,
    private readonly open: Acceptor,
    private readonly log: Logger,
  ) {
    this.warnings = new LimitedWarnings(log);
    this.buffered = {
      used: 0,
      max: options.maxBufferedBytes,
      exceeded: () =>
        this.warnings.warn(
          'buffered',
          { max: this.buffered.max },
          'connection cut: unfinished request lines across all connections passed limits.maxBufferedBytes',
        ),
    };
  }

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

  /**
   * New limits (reload). `maxConnections`, `maxConnectionsPerPeer` and `maxBufferedBytes` apply at
   * once (connections already open above a lowered cap are not cut); the per-connection limits
   * (`maxLineBytes`, `maxInFlight`, `idleTimeoutMs`, `requestTimeoutMs`) apply to connections
   * accepted from now on, while open ones keep those they started with.
   */
  reconfigure(limits: ReloadableLimits): void {
    this.options = { ...this.options, ...limits };
    this.buffered.max = limits.maxBufferedBytes;
  }

  /**
   * New TLS certificate, key and CA (reload) for the next handshakes; open connections keep theirs.
   * Throws, changing nothing, when they make no valid context (a key not matching the certificate).
   */
  setTlsCredentials(tls: { readonly cert: Buffer; readonly key: Buffer; readonly ca: Buffer }): void {
    if (this.tlsServer === undefined) throw new Error('no TLS listener is running');
    const context = { cert: tls.cert, key: tls.key, ca: tls.ca, minVersion: 'TLSv1.3' } as const;
    createSecureContext(context); // throws on unusable PEM before setSecureContext changes anything
    this.tlsServer.setSecureContext(context);
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
    for (const socket of [...this.connections.keys(), ...this.refused]) socket.destroy();
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
    const peer = peerOf(identity);
    const fromPeer = this.perPeer.get(peer) ?? 0;
    if (this.connections.size >= this.options.maxConnections) {
      this.refuse(socket, 'too many connections; try again later', 'cap', { max: this.options.maxConnections });
      return;
    }
    if (fromPeer >= this.options.maxConnectionsPerPeer) {
      this.refuse(socket, 'too many connections from this client; try again later', 'peer-cap', {
        peer,
        max: this.options.maxConnectionsPerPeer,
      });
      return;
    }
    this.perPeer.set(peer, fromPeer + 1);
    this.connections.set(socket, new Connection(socket, this.open(identity), this.options, this.buffered));
    socket.once('close', () => {
      this.connections.delete(socket);
      const left = (this.perPeer.get(peer) ?? 1) - 1;
      if (left > 0) this.perPeer.set(peer, left);
      else this.perPeer.delete(peer);
    });
  }

  private refuse(socket: Socket, text: string, kind: string, fields: Record<string, unknown>): void {
    // Tracked until closed, so close() can cut a refused peer that never reads its answer.
    this.refused.add(socket);
    socket.once('close', () => this.refused.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.end(`${formatError('THROTTLED', text)}\n`);
    this.warnings.warn(kind, fields, `connection refused: ${text.split(';')[0] as string}`);
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
    this.tlsServer = server;
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
