import { connect, createServer, type Socket } from 'node:net';

/**
 * A TCP relay on 127.0.0.1 in front of a real KMS (LocalStack, an emulator) that
 * counts connections, so a test sees a client's sockets open and close without
 * reaching into the SDK, and that can take the KMS away: `refuse()` stops listening and
 * cuts every open connection (new ones get ECONNREFUSED, as from a host with nothing on
 * the port), `accept()` listens again on the same port, `cut()` only cuts what is open.
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
  /** Listens again on the same port: the KMS is "up". */
  accept(): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(upstreamPort: number): Promise<TcpProxy> {
  const open = new Set<Socket>();
  const waiters: Array<() => void> = [];
  let accepted = 0;
  let listening = false;
  const server = createServer((client) => {
    accepted++;
    open.add(client);
    const upstream = connect(upstreamPort, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    // Either side ending ends both, as a direct connection would.
    const end = () => (client.destroy(), upstream.destroy());
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.once('close', () => {
      open.delete(client);
      if (open.size === 0) for (const w of waiters.splice(0)) w();
    });
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
    refuse: stop,
    accept: async () => {
      if (!listening) await listen(port);
    },
    close: stop,
  };
}
