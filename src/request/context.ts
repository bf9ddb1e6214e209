import type { ErrorCode } from '../protocol/errors.js';

/** How a client reached the gateway; `internal` is an in-process caller (embedding, benchmarks). */
export type Transport = 'unix' | 'tcp' | 'tls' | 'vault' | 'internal';

/** What the transport tells about a client, before any AUTH line. */
export interface ClientIdentity {
  readonly transport: Transport;
  /** Unix socket peer credentials (SO_PEERCRED), when the addon could read them. */
  readonly peer?: { readonly uid: number; readonly gid: number; readonly pid: number };
  /** Identity from a verified client certificate (subject CN, else the first SAN). */
  readonly cert?: string;
  /** Remote address, for TCP and TLS. */
  readonly address?: string;
}

/** Per-connection state the pipeline consults for every request. */
export interface RequestContext {
  readonly identity: ClientIdentity;
  /** The policy client this connection acts as; undefined until matched or authenticated. */
  client: string | undefined;
}

/** One request as the audit log sees it: never payloads or key material. */
export interface RequestRecord {
  readonly time: string;
  readonly client: string;
  readonly verb: string;
  readonly keyId?: string;
  readonly version?: number;
  readonly outcome: 'OK' | ErrorCode;
  readonly latencyMs: number;
  /** The KEK URI, for admin verbs. */
  readonly kek?: string;
}

/** Receives a record per request (the audit log). */
export interface RequestObserver {
  record(entry: RequestRecord): void;
  /** False when records can no longer be kept: the gateway then refuses requests (fail closed). */
  readonly available: boolean;
}

/** Fields a request fills in while it runs, for its record. */
export interface RequestTrace {
  keyId?: string;
  version?: number;
  kek?: string;
}

/** A printable name for a client in logs and audit records. */
export function describeClient(ctx: RequestContext): string {
  if (ctx.client) return ctx.client;
  const id = ctx.identity;
  if (id.cert) return `cert:${id.cert}`;
  if (id.peer) return `uid:${id.peer.uid}`;
  return id.address ? `${id.transport}:${id.address}` : id.transport;
}
