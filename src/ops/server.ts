import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readiness } from '../kms/readiness.js';
import type { Logger } from '../log/logger.js';
import { listenProblem, parseListen } from './listen.js';

/** What the ops listener serves. */
export interface OpsOptions {
  /** `host:port` (`ops.listen`); port 0 picks a free one (tests). */
  readonly listen: string;
  /** `ops.allowRemote`: serve on an address that is not loopback. */
  readonly allowRemote: boolean;
  /** `/metrics`; absent: 404. */
  readonly metrics?: { text(): Promise<string>; readonly contentType: string };
  /** `/readyz`: must be cheap (a cached state, never a KMS call per probe). */
  readonly readiness: () => Readiness;
  readonly log: Logger;
}

/** A running ops listener. */
export interface OpsServer {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/** How long a probe or scrape may take to send its request, and an idle keep-alive connection may stay. */
const REQUEST_TIMEOUT_MS = 5_000;
const KEEP_ALIVE_MS = 5_000;

/**
 * Starts the ops HTTP listener: `GET /livez` (200 while the event loop answers; touches neither
 * the KMS nor the store), `GET /readyz` (200 or 503 with a JSON body naming each KEK's state and
 * last error code; `?verbose` adds since/checkedAt), `GET /metrics` (Prometheus text). HEAD works
 * wherever GET does; other methods get 405, other paths 404, and requests with a body 400. The
 * endpoints are not authenticated: a host that is not loopback is refused unless `allowRemote`.
 */
export async function startOps(options: OpsOptions): Promise<OpsServer> {
  const problem = listenProblem(options.listen, options.allowRemote);
  if (problem !== undefined) throw new Error(problem);
  const { host, port } = parseListen(options.listen);
  const server = createServer(
    { requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_MS, maxHeaderSize: 8192 },
    (req, res) => {
      handle(req, res, options).catch((err: unknown) => {
        options.log.warn({ err: (err as Error).message, path: pathOf(req) }, 'ops request failed');
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
        else res.destroy();
      });
    },
  );
  server.setTimeout(REQUEST_TIMEOUT_MS * 2);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => options.log.error({ err: err.message }, 'ops listener error'));
  const bound = (server.address() as AddressInfo).port;
  options.log.info({ host, port: bound }, 'ops listener: /livez /readyz /metrics');
  let closing: Promise<void> | undefined;
  return {
    host,
    port: bound,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

const ROUTES = ['/livez', '/readyz', '/metrics'] as const;

async function handle(req: IncomingMessage, res: ServerResponse, options: OpsOptions): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://ops.invalid');
  const path = url.pathname;
  if (!(ROUTES as readonly string[]).includes(path) || (path === '/metrics' && options.metrics === undefined)) {
    send(res, 404, 'text/plain; charset=utf-8', 'not found: try /livez, /readyz or /metrics\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
    return;
  }
  if (hasBody(req)) {
    res.setHeader('Connection', 'close');
    send(res, 400, 'text/plain; charset=utf-8', 'request bodies are not accepted\n');
    return;
  }
  switch (path) {
    case '/livez':
      send(res, 200, 'text/plain; charset=utf-8', 'ok\n');
      return;
    case '/readyz': {
      const readiness = options.readiness();
      const body = readinessBody(readiness, url.searchParams.has('verbose'));
      send(res, readiness.ready ? 200 : 503, 'application/json; charset=utf-8', `${JSON.stringify(body)}\n`);
      return;
    }
    default: {
      const metrics = options.metrics as NonNullable<OpsOptions['metrics']>;
      send(res, 200, metrics.contentType, await metrics.text());
    }
  }
}

/** The `/readyz` body: every part, and each KEK with its state and last error code; `verbose` adds the times. */
export function readinessBody(r: Readiness, verbose: boolean): Record<string, unknown> {
  return {
    ready: r.ready,
    store: r.store,
    listening: r.listening,
    warm: r.warm,
    keks: r.keks.map((k) => ({
      kek: k.kek,
      state: k.state,
      ...(k.code !== undefined ? { code: k.code } : {}),
      ...(verbose ? { since: k.since, ...(k.checkedAt !== undefined ? { checkedAt: k.checkedAt } : {}) } : {}),
    })),
  };
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

function pathOf(req: IncomingMessage): string {
  return (req.url ?? '').split('?')[0] ?? '';
}

/** Sends a whole response; for HEAD, Node sends the headers (Content-Length included) and no body. */
function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(body);
}
