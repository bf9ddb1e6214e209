import { createHash, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { ADMIN_VERBS, DATA_VERBS } from '../protocol/parser.js';
import type { ClientIdentity } from '../request/context.js';
import { AuthFailures } from './auth-failures.js';
import { globToRegExp, KekGlobSchema, matchesAny } from './glob.js';
import { KV_VERBS, type AccessControl, type AuthResult, type Permission } from './types.js';

/** Verbs a grant may name; `admin` stands for every admin verb. */
export const GRANT_VERBS = [...DATA_VERBS, ...ADMIN_VERBS, ...KV_VERBS, 'admin'] as const;

const TOKEN_HASH_RE = /^sha256:[0-9a-f]{64}$/;

/** `policy` in the config: named clients, how each is recognized, and what each may do. */
export const PolicySchema = z
  .object({
    clients: z
      .array(
        z
          .object({
            /** Name used in audit records and `kmsgw policy check`. */
            name: z.string().regex(/^[A-Za-z0-9._:-]{1,64}$/, 'must be 1-64 characters of A-Z a-z 0-9 . _ : -'),
            /** How a connection is recognized as this client; any one suffices. */
            match: z
              .object({
                /** Unix socket peers with these uids (read with SO_PEERCRED). */
                uids: z.array(z.number().int().min(0)).default([]),
                /** TLS clients whose verified certificate's CN (or first SAN) is one of these. */
                certs: z.array(z.string().min(1)).default([]),
                /** `AUTH <token>` with a token whose SHA-256 is one of these (`sha256:<hex>`); never the token itself. */
                tokens: z.array(z.string().regex(TOKEN_HASH_RE, 'must be sha256:<64 hex digits> (kmsgw policy hash-token)')).default([]),
              })
              .strict(),
            /** What the client may do; nothing else is allowed. */
            grants: z
              .array(
                z
                  .object({
                    verbs: z.array(z.enum(GRANT_VERBS)).min(1),
                    /** Key-id globs: `*` matches any run of characters (slashes included), `?` one character. */
                    keys: z.array(z.string().regex(/^[A-Za-z0-9._\-/:*?]{1,256}$/, 'must be a key-id glob')).min(1),
                    /**
                     * KEK URI globs the grant's CREATE, ROTATE and REWRAP may name (`keys.allowedKeks` applies too).
                     * @default any KEK `keys.allowedKeks` allows
                     */
                    keks: z.array(KekGlobSchema).min(1).optional(),
                  })
                  .strict(),
              )
              .default([]),
          })
          .strict(),
      )
      .min(1),
    /**
     * Failed AUTH attempts allowed per window, counted per connection and per peer identity
     * (Unix peer uid, certificate); never per address, which local clients share.
     */
    authFailures: z
      .object({ max: z.number().int().min(1).default(5), windowMs: z.number().int().min(1000).default(60_000) })
      .strict()
      .prefault({}),
  })
  .strict();

export type PolicyConfig = z.output<typeof PolicySchema>;

/** `sha256:<hex>` of a token, the form the config stores. */
export function hashToken(token: string): string {
  return `sha256:${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}

interface CompiledGrant {
  readonly verbs: ReadonlySet<Permission>;
  readonly keys: readonly RegExp[];
  /** Absent: the grant names no KEKs of its own. */
  readonly keks: ((kek: string) => boolean) | undefined;
  readonly source: { verbs: readonly string[]; keys: readonly string[]; keks: readonly string[] | undefined };
}

interface CompiledClient {
  readonly name: string;
  readonly uids: ReadonlySet<number>;
  readonly certs: ReadonlySet<string>;
  readonly tokenHashes: readonly Buffer[];
  readonly grants: readonly CompiledGrant[];
}

/** Why `explain` decided as it did. */
export interface Decision {
  readonly allowed: boolean;
  readonly reason: string;
}

/** A clock for the AUTH failure window (tests inject one). */
export interface PolicyClock {
  now(): number;
}

/**
 * The configured policy: default deny. A client gets only what a grant names;
 * admin verbs need an explicit grant; tokens are compared as SHA-256 hashes in
 * constant time, and failed AUTH attempts are limited per connection and per peer.
 */
export class Policy implements AccessControl {
  private readonly clients: readonly CompiledClient[];
  private readonly failures: AuthFailures;
  private readonly limit: PolicyConfig['authFailures'];

  /**
   * @param previous the policy this one replaces (reload): its AUTH failure counts carry over
   *   when `authFailures` is unchanged, so a reload does not reset a client's lockout window.
   */
  constructor(
    config: PolicyConfig,
    private readonly clock: PolicyClock = Date,
    previous?: Policy,
  ) {
    this.limit = config.authFailures;
    this.failures =
      previous && previous.limit.max === this.limit.max && previous.limit.windowMs === this.limit.windowMs
        ? previous.failures
        : new AuthFailures(config.authFailures);
    this.clients = config.clients.map((c) => ({
      name: c.name,
      uids: new Set(c.match.uids),
      certs: new Set(c.match.certs),
      tokenHashes: c.match.tokens.map((t) => Buffer.from(t.slice('sha256:'.length), 'hex')),
      grants: c.grants.map((g) => ({
        verbs: new Set(g.verbs.flatMap((v) => (v === 'admin' ? [...ADMIN_VERBS] : [v as Permission]))),
        keys: g.keys.map(globToRegExp),
        keks: g.keks && matchesAny(g.keks),
        source: { verbs: g.verbs, keys: g.keys, keks: g.keks },
      })),
    }));
  }

  identify(identity: ClientIdentity): string | undefined {
    for (const c of this.clients) {
      if (identity.peer && c.uids.has(identity.peer.uid)) return c.name;
      if (identity.cert !== undefined && c.certs.has(identity.cert)) return c.name;
    }
    return undefined;
  }

  authenticate(token: string, identity: ClientIdentity, connection: object): AuthResult {
    const now = this.clock.now();
    if (this.failures.limited(identity, connection, now)) return { ok: false, reason: 'rate-limited' };
    const presented = createHash('sha256').update(token, 'utf8').digest();
    let found: string | undefined;
    // Every stored hash is compared, so timing does not tell which client (or whether any) matched.
    for (const c of this.clients) {
      for (const h of c.tokenHashes) {
        if (timingSafeEqual(h, presented) && found === undefined) found = c.name;
      }
    }
    if (found !== undefined) {
      this.failures.succeeded(identity, connection);
      return { ok: true, client: found };
    }
    this.failures.failed(identity, connection, now);
    return { ok: false, reason: 'denied' };
  }

  authorize(client: string | undefined, verb: Permission, keyId: string | undefined, kek?: string): boolean {
    return this.explain(client, verb, keyId, kek).allowed;
  }

  /** The decision with its reason, for `kmsgw policy check`. */
  explain(client: string | undefined, verb: Permission, keyId: string | undefined, kek?: string): Decision {
    if (verb === 'PING' || verb === 'AUTH') return { allowed: true, reason: `${verb} is always allowed` };
    if (client === undefined) return { allowed: false, reason: 'the connection is not a known client (default deny)' };
    const c = this.clients.find((x) => x.name === client);
    if (!c) return { allowed: false, reason: `no client named ${client} (default deny)` };
    let kekRefused = false;
    for (const [i, g] of c.grants.entries()) {
      if (!g.verbs.has(verb)) continue;
      // LIST without a key asks "may list at all?"; the reply is then filtered id by id.
      if (keyId === undefined ? verb !== 'LIST' : !g.keys.some((re) => re.test(keyId))) continue;
      if (kek !== undefined && g.keks && !g.keks(kek)) {
        kekRefused = true;
        continue;
      }
      const keks = g.source.keks ? ` with KEKs ${g.source.keks.join(',')}` : '';
      return {
        allowed: true,
        reason: `grant #${i + 1} of ${client} (verbs ${g.source.verbs.join(',')} on ${g.source.keys.join(',')}${keks})`,
      };
    }
    const what = `${verb}${keyId === undefined ? '' : ` on ${keyId}`}${kekRefused ? ` with KEK ${kek}` : ''}`;
    return { allowed: false, reason: `no grant of ${client} allows ${what} (default deny)` };
  }
}
