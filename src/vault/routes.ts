/**
 * The part of Vault's HTTP API kmsgw answers (docs/vault-api.md), as typed routes: a request
 * line becomes one of these or a Vault-shaped 404/405. Pure: no sockets, no keys.
 */

/** What one request asks for. Paths inside a mount are kept as given (validated by `keyPath`). */
export type Route =
  | { readonly kind: 'health' }
  | { readonly kind: 'mount-info'; readonly mount: string }
  | { readonly kind: 'kv-read'; readonly mount: string; readonly path: string; readonly version?: number }
  | { readonly kind: 'kv-write'; readonly mount: string; readonly path: string }
  | { readonly kind: 'kv-list'; readonly mount: string; readonly path: string }
  | { readonly kind: 'kv-metadata'; readonly mount: string; readonly path: string }
  | { readonly kind: 'kv-delete-all'; readonly mount: string; readonly path: string }
  | { readonly kind: 'transit-encrypt'; readonly key: string }
  | { readonly kind: 'transit-decrypt'; readonly key: string }
  | { readonly kind: 'transit-rewrap'; readonly key: string }
  | { readonly kind: 'transit-datakey'; readonly key: string; readonly plaintext: boolean }
  | { readonly kind: 'transit-rotate'; readonly key: string }
  | { readonly kind: 'transit-create'; readonly key: string }
  | { readonly kind: 'transit-key'; readonly key: string };

/** What the server hands on to the key operations: everything but health and mount info. */
export type KeyRoute = Exclude<Route, { kind: 'health' | 'mount-info' }>;

/** Transit routes (the others handed on are KV v2). */
export function isTransit(route: KeyRoute): route is Extract<Route, { kind: `transit-${string}` }> {
  return route.kind.startsWith('transit-');
}

/** A request that matched no route: Vault answers 404 for an unknown path, 405 for a known one with the wrong method. */
export interface NoRoute {
  readonly kind: 'none';
  readonly status: 404 | 405;
}

/** Which mounts are served (`vault.mounts`). */
export interface Mounts {
  readonly kv: readonly string[];
  /** The Transit mount, or undefined when Transit is off. */
  readonly transit: string | undefined;
}

const SEGMENT_RE = /^[A-Za-z0-9._\-:]{1,128}$/;

/** A secret or key path inside a mount: segments of A-Z a-z 0-9 . _ - : joined by `/`, at most 200 characters. */
export function keyPath(path: string): string | undefined {
  if (path.length === 0 || path.length > 200) return undefined;
  const segments = path.split('/');
  return segments.every((s) => SEGMENT_RE.test(s) && s !== '.' && s !== '..') ? path : undefined;
}

/** A directory path for listing: empty (the mount's root) or a key path with a trailing `/`. */
function listPath(path: string): string | undefined {
  if (path === '') return '';
  const trimmed = path.endsWith('/') ? path.slice(0, -1) : path;
  return keyPath(trimmed) === undefined ? undefined : `${trimmed}/`;
}

const none = (status: 404 | 405): NoRoute => ({ kind: 'none', status });

/**
 * Routes `method` and the request target (`/v1/...?query`). Vault's `LIST` method and
 * `GET ...?list=true` are the same request.
 */
export function route(method: string, target: string, mounts: Mounts): Route | NoRoute {
  const url = new URL(target, 'http://vault.invalid');
  if (!url.pathname.startsWith('/v1/')) return none(404);
  const rest = decodeURIComponent(url.pathname.slice(4));
  const list = method === 'LIST' || (method === 'GET' && url.searchParams.get('list') === 'true');
  if (rest === 'sys/health') return method === 'GET' || method === 'HEAD' ? { kind: 'health' } : none(405);
  if (rest.startsWith('sys/mounts/')) {
    const mount = rest.slice('sys/mounts/'.length).replace(/\/$/, '');
    if (!mounts.kv.includes(mount) && mount !== mounts.transit) return none(404);
    return method === 'GET' ? { kind: 'mount-info', mount } : none(405);
  }
  const slash = rest.indexOf('/');
  const mount = slash === -1 ? rest : rest.slice(0, slash);
  const inMount = slash === -1 ? '' : rest.slice(slash + 1);
  if (mounts.kv.includes(mount)) return kvRoute(method, list, mount, inMount, url.searchParams);
  if (mount === mounts.transit) return transitRoute(method, inMount);
  return none(404);
}

function kvRoute(method: string, list: boolean, mount: string, inMount: string, query: URLSearchParams): Route | NoRoute {
  if (inMount.startsWith('data/')) {
    const path = keyPath(inMount.slice('data/'.length));
    if (path === undefined) return none(404);
    if (method === 'GET') {
      const v = query.get('version');
      if (v === null || v === '0') return { kind: 'kv-read', mount, path };
      return /^[1-9][0-9]{0,9}$/.test(v) ? { kind: 'kv-read', mount, path, version: Number(v) } : none(404);
    }
    if (method === 'POST' || method === 'PUT') return { kind: 'kv-write', mount, path };
    return none(405);
  }
  if (inMount === 'metadata' || inMount.startsWith('metadata/')) {
    const raw = inMount.slice('metadata'.length).replace(/^\//, '');
    if (list) {
      const path = listPath(raw);
      return path === undefined ? none(404) : { kind: 'kv-list', mount, path };
    }
    const path = keyPath(raw);
    if (path === undefined) return none(404);
    if (method === 'GET') return { kind: 'kv-metadata', mount, path };
    if (method === 'DELETE') return { kind: 'kv-delete-all', mount, path };
    return none(405);
  }
  return none(404);
}

function transitRoute(method: string, inMount: string): Route | NoRoute {
  const [op, ...tail] = inMount.split('/');
  if (op === 'datakey') {
    const [type, ...name] = tail;
    const key = keyPath(name.join('/'));
    if (key === undefined || (type !== 'plaintext' && type !== 'wrapped')) return none(404);
    return method === 'POST' || method === 'PUT' ? { kind: 'transit-datakey', key, plaintext: type === 'plaintext' } : none(405);
  }
  if (op === 'keys' && tail.at(-1) === 'rotate') {
    const key = keyPath(tail.slice(0, -1).join('/'));
    if (key === undefined) return none(404);
    return method === 'POST' || method === 'PUT' ? { kind: 'transit-rotate', key } : none(405);
  }
  const key = keyPath(tail.join('/'));
  if (key === undefined) return none(404);
  if (op === 'keys') {
    if (method === 'GET') return { kind: 'transit-key', key };
    return method === 'POST' || method === 'PUT' ? { kind: 'transit-create', key } : none(405);
  }
  const kinds = { encrypt: 'transit-encrypt', decrypt: 'transit-decrypt', rewrap: 'transit-rewrap' } as const;
  const kind = kinds[op as keyof typeof kinds] as (typeof kinds)[keyof typeof kinds] | undefined;
  if (kind === undefined) return none(404);
  return method === 'POST' || method === 'PUT' ? { kind, key } : none(405);
}
