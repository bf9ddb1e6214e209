import type { Verb } from '../protocol/parser.js';
import type { ClientIdentity } from '../server/context.js';

/**
 * Who may ask for which key. The gateway asks it once per connection (who is
 * this?), on AUTH, and before every request (may they?).
 */
export interface AccessControl {
  /** True when a policy is configured: default deny. False: the permissive development default. */
  readonly enforcing: boolean;
  /** The client a connection is from its transport alone (peer uid, certificate), if any. */
  identify(identity: ClientIdentity): string | undefined;
  /** The client an `AUTH <token>` names, or undefined; compared in constant time. */
  authenticate(token: string, identity: ClientIdentity): string | undefined;
  /** May `client` use `verb` on `keyId` (undefined for verbs without a key, such as LIST)? */
  authorize(client: string | undefined, verb: Verb, keyId: string | undefined): boolean;
}
