import { connect, createServer, type Socket } from 'node:net';

/**
 * A TCP relay on 127.0.0.1 in front of a real KMS (LocalStack, an emulator) that
 * counts connections, so a test sees a client's sockets open and close without
 * reaching into the SDK.
 */
export interface TcpProxy {
  readonly port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Connections open now. */
  readonly open: number;
  /** Resolves once no connection is open; rejects if some still are after `timeoutMs`. */
  drained(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(upstreamPort: number): Promise<TcpProxy> {
  const open = new Set<Socket>();
  const waiters: Array<() => void> = [];
  let accepted = 0;
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
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
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
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
