import { connect, createServer, type Socket } from 'node:net';

/**
 * A TCP relay on 127.0.0.1 in front of a real KMS (LocalStack, an emulator) that
 * counts connections, so a test sees a client's sockets open and close without
 * reaching into the SDK, and that can take the KMS away: `refuse()` stops listening and
 * cuts every open connection (new ones get ECONNREFUSED, as from a host with nothing on
 * the port), `accept()` listens again on the same port, `cut()` only cuts what is open, and
 * `blackhole()` makes it a black hole: connections are accepted and never answered, and those
 * already open stop forwarding (a partition where packets are dropped, not refused).
 */
export interface TcpProxy {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections open now. */
  readonly open: number;
  /** Resolves once no connection is open; rejects if some still are after `timeoutMs`. */
  drained(timeoutMs?: number): Promise<void>;
  /** Cuts every open connection (the client sees ECONNRESET or a hang-up mid-request). */
  cut(): void;
  /** Stops listening and cuts every open connection: the KMS is "down". */
  refuse(): Promise<void>;
  /**
   * Listens (if it was refusing) and forwards nothing: new connections are accepted and held,
   * open ones stop forwarding, their requests never answered. `accept()` ends it, cutting them.
   */
  blackhole(): Promise<void>;
  /** Listens again on the same port, forwarding again (held black-hole connections are cut): the KMS is "up". */
  accept(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(upstreamPort: number): Promise<TcpProxy> {
  const open = new Set<Socket>();
  const waiters: Array<() => void> = [];
  let accepted = 0;
  let listening = false;
  // Each forwarded client's upstream; a client without one is held (black hole).
  const links = new Map<Socket, Socket>();
  let holding = false;
  const hold = (client: Socket) => {
    const upstream = links.get(client);
    links.delete(client);
    if (upstream !== undefined) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      upstream.destroy();
    }
    // Read and drop whatever the client sends; never answer.
    client.resume();
  };
  const server = createServer((client) => {
    accepted++;
    open.add(client);
    client.once('close', () => {
      open.delete(client);
      links.delete(client);
      if (open.size === 0) for (const w of waiters.splice(0)) w();
    });
    if (holding) {
      client.on('error', () => client.destroy());
      hold(client);
      return;
    }
    const upstream = connect(upstreamPort, '127.0.0.1');
    links.set(client, upstream);
    client.pipe(upstream).pipe(client);
    // Either side ending ends both, as a direct connection would (not once the client is held).
    const end = () => {
      upstream.destroy();
      if (links.get(client) === upstream) client.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject).listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        listening = true;
        resolve();
      });
    });
  const cut = () => {
    for (const s of open) s.destroy();
  };
  const stop = async () => {
    cut();
    if (!listening) return;
    listening = false;
    await new Promise((resolve) => server.close(resolve));
  };
  await listen(0);
  const port = (server.address() as { port: number }).port;
  return {
    port,
    get accepted() {
      return accepted;
    },
    get open() {
      return open.size;
    },
    drained: (timeoutMs = 5000) =>
      new Promise<void>((resolve, reject) => {
        if (open.size === 0) return resolve();
        const timer = setTimeout(() => reject(new Error(`${open.size} connection(s) still open after ${timeoutMs} ms`)), timeoutMs);
        waiters.push(() => (clearTimeout(timer), resolve()));
      }),
    cut,
    refuse: async () => {
      holding = false;
      await stop();
    },
    blackhole: async () => {
      holding = true;
      for (const client of [...links.keys()]) hold(client);
      if (!listening) await listen(port);
    },
    accept: async () => {
      if (holding) {
        holding = false;
        cut();
      }
      if (!listening) await listen(port);
    },
    close: stop,
  };
}
