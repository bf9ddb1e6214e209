import type { ClientIdentity } from '../request/context.js';
import type { AccessControl, AuthResult, Permission } from './types.js';

/**
 * The access control the Pipeline and the Executor ask, whose policy a reload swaps at once.
 * Grants apply from each connection's next request on; which client a connection is was
 * decided when it connected (peer uid, certificate) or at its AUTH, and stays for its life.
 */
export class SwappableAccess implements AccessControl {
  constructor(private target: AccessControl) {}

  get current(): AccessControl {
    return this.target;
  }

  swap(next: AccessControl): void {
    this.target = next;
  }

  identify(identity: ClientIdentity): string | undefined {
    return this.target.identify(identity);
  }

  authenticate(token: string, identity: ClientIdentity, connection: object): AuthResult {
    return this.target.authenticate(token, identity, connection);
  }

  authorize(client: string | undefined, verb: Permission, keyId: string | undefined, kek?: string): boolean {
    return this.target.authorize(client, verb, keyId, kek);
  }
}
