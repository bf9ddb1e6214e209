import { request, createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';

/** What the proxy answers instead of forwarding, for the next `times` requests (all of them without). */
export interface HttpFault {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body: string;
  readonly times?: number;
}

/**
 * A small HTTP proxy on 127.0.0.1 in front of a real HTTP KMS (LocalStack): it forwards every
 * request as it came, unless told to answer with a fault (e.g. AWS's throttling reply) or to hold
 * requests back for a while first. The SDK in front of it is real and unmodified.
 */
export interface HttpFaultProxy {
  readonly port: number;
  /** Requests that reached the proxy, faulted or not. */
  readonly requests: number;
  /** Answers the next requests with `fault` (forwarding resumes after `times` of them, or after clear()). */
  fail(fault: HttpFault): void;
  /** Holds every request back `ms` before it is handled (0: no delay). */
  delay(ms: number): void;
  /** Forwards everything again, at once. */
  clear(): void;
  close(): Promise<void>;
}

/** AWS's answer to a call over its request rate (JSON 1.1 protocol), with a Retry-After in seconds when given. */
export function awsThrottling(retryAfterSeconds?: number, times?: number): HttpFault {
  return {
    status: 400,
    headers: {
      'content-type': 'application/x-amz-json-1.1',
      'x-amzn-requestid': '00000000-0000-0000-0000-000000000000',
      ...(retryAfterSeconds !== undefined ? { 'retry-after': String(retryAfterSeconds) } : {}),
    },
    body: JSON.stringify({ __type: 'ThrottlingException', message: 'Rate exceeded' }),
    ...(times !== undefined ? { times } : {}),
  };
}

export async function startHttpFaultProxy(upstreamPort: number): Promise<HttpFaultProxy> {
  let fault: { readonly fault: HttpFault; left: number } | undefined;
  let delayMs = 0;
  let requests = 0;
  const answer = (res: ServerResponse, f: HttpFault) => {
    res.writeHead(f.status, { ...f.headers, 'content-length': Buffer.byteLength(f.body) });
    res.end(f.body);
  };
  const forward = (method: string, path: string, headers: IncomingHttpHeaders, body: Buffer, res: ServerResponse) => {
    const up = request({ host: '127.0.0.1', port: upstreamPort, method, path, headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    up.end(body);
  };
  const server = createServer((req, res) => {
    requests++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const handle = () => {
        const active = fault;
        if (active !== undefined) {
          if (--active.left <= 0) fault = undefined;
          return answer(res, active.fault);
        }
        forward(req.method ?? 'GET', req.url ?? '/', req.headers, Buffer.concat(chunks), res);
      };
      if (delayMs > 0) setTimeout(handle, delayMs);
      else handle();
    });
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    get requests() {
      return requests;
    },
    fail: (f) => void (fault = { fault: f, left: f.times ?? Number.POSITIVE_INFINITY }),
    delay: (ms) => void (delayMs = ms),
    clear: () => {
      fault = undefined;
      delayMs = 0;
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
