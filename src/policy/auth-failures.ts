import type { ClientIdentity } from '../request/context.js';

/** Peers with recent AUTH failures tracked before expired ones are pruned. */
const MAX_TRACKED_PEERS = 10_000;

/** How many failed AUTH attempts are allowed in a sliding window (`policy.authFailures`). */
export interface FailureLimit {
  readonly max: number;
  readonly windowMs: number;
}

/**
 * Failed AUTH attempts, counted per connection and per peer identity (Unix peer
 * uid, certificate), never per address: all loopback TCP clients share an
 * address (and all Unix clients a transport when peer credentials are missing),
 * so counting there would let one local process lock out every other's token.
 * Anonymous peers are limited per connection only; tokens must therefore be
 * high-entropy, since an attacker may open new connections.
 */
export class AuthFailures {
  // Keyed by an object unique to the connection, so its failures go with it.
  private readonly connections = new WeakMap<object, number[]>();
  private readonly peers = new Map<string, number[]>();

  constructor(private readonly limit: FailureLimit) {}

  /** Whether the connection, or the peer it comes from, has used up its failures. */
  limited(identity: ClientIdentity, connection: object, now: number): boolean {
    const peer = peerOf(identity);
    return this.full(this.connections.get(connection), now) || (peer !== undefined && this.full(this.peers.get(peer), now));
  }

  failed(identity: ClientIdentity, connection: object, now: number): void {
    this.connections.set(connection, [...this.recent(this.connections.get(connection), now), now]);
    const peer = peerOf(identity);
    if (peer === undefined) return;
    this.peers.set(peer, [...this.recent(this.peers.get(peer), now), now]);
    if (this.peers.size > MAX_TRACKED_PEERS) this.forgetExpired(now);
  }

  succeeded(identity: ClientIdentity, connection: object): void {
    this.connections.delete(connection);
    const peer = peerOf(identity);
    if (peer !== undefined) this.peers.delete(peer);
  }

  private full(times: readonly number[] | undefined, now: number): boolean {
    return this.recent(times, now).length >= this.limit.max;
  }

  private recent(times: readonly number[] | undefined, now: number): number[] {
    return (times ?? []).filter((t) => now - t < this.limit.windowMs);
  }

  /** Keeps the peer table bounded: peers whose failures all aged out are dropped. */
  private forgetExpired(now: number): void {
    for (const [peer, times] of this.peers) {
      if (this.recent(times, now).length === 0) this.peers.delete(peer);
    }
  }
}

/** A peer identity the transport vouches for (uid, certificate); undefined for anonymous peers. */
function peerOf(identity: ClientIdentity): string | undefined {
  if (identity.peer) return `uid:${identity.peer.uid}`;
  if (identity.cert !== undefined) return `cert:${identity.cert}`;
  return undefined;
}
