import { createServer } from 'node:net';

/**
 * A TCP port free on `host` when asked (the caller binds it a moment later, so another process could
 * take it in between). PostgreSQL binds 127.0.0.1; LocalStack's gateway binds 0.0.0.0 whatever
 * GATEWAY_LISTEN says, so its port must be free there.
 */
export function freePort(host: '127.0.0.1' | '0.0.0.0' = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}
