import type { Verb } from '../protocol/parser.js';
import type { ClientIdentity } from '../request/context.js';

/** What the Vault front door's KV v2 does to a secret at `kv/<mount>/<path>`: no protocol verb, a grant only. */
export const KV_VERBS = ['KVREAD', 'KVWRITE', 'KVLIST', 'KVDELETE'] as const;
export type KvVerb = (typeof KV_VERBS)[number];

/** Anything a grant may allow: a protocol verb or a KV operation. */
export type Permission = Verb | KvVerb;

/** Outcome of `AUTH <token>`. */
export type AuthResult =
  { readonly ok: true; readonly client: string } | { readonly ok: false; readonly reason: 'denied' | 'rate-limited' };

/**
 * Who may ask for which key. The gateway asks it once per connection (who is
 * this?), on AUTH, and before every request (may they?).
 */
export interface AccessControl {
  /** The client a connection is from its transport alone (peer uid, certificate), if any. */
  identify(identity: ClientIdentity): string | undefined;
  /**
   * The client an `AUTH <token>` names. Failures are limited per `connection` (any object
   * unique to it, kept for its lifetime) and per peer identity the transport vouches for.
   */
  authenticate(token: string, identity: ClientIdentity, connection: object): AuthResult;
  /**
   * May `client` use `verb` on `keyId` (undefined for LIST, which is filtered per id), naming
   * `kek` (CREATE, ROTATE and REWRAP with a KEK URI)?
   */
  authorize(client: string | undefined, verb: Permission, keyId: string | undefined, kek?: string): boolean;
}
