import { isIP, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ClientIdentity } from '../request/context.js';
import { peerCredOf } from './peercred.js';

/** Who is at the other end of a socket, as far as the transport tells. */

/** True for 127.0.0.0/8, ::1 and localhost. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}

/** What a plain socket says about its peer: SO_PEERCRED on a Unix socket, the address on TCP. */
export function identityOf(socket: Socket): ClientIdentity {
  if (socket.remoteAddress === undefined) {
    const peer = peerCredOf(socket);
    return peer ? { transport: 'unix', peer } : { transport: 'unix' };
  }
  return { transport: 'tcp', address: socket.remoteAddress };
}

/** A verified client certificate's identity: its subject CN, else its first DNS or URI SAN. */
export function certificateIdentity(cert: { subject?: { CN?: string | string[] }; subjectaltname?: string }): string | undefined {
  const cn = cert.subject?.CN;
  if (typeof cn === 'string' && cn.length > 0) return cn;
  if (Array.isArray(cn) && typeof cn[0] === 'string') return cn[0];
  const san = cert.subjectaltname?.split(', ').find((s) => s.startsWith('DNS:') || s.startsWith('URI:'));
  return san?.slice(4);
}

export function tlsIdentityOf(socket: TLSSocket): ClientIdentity {
  const cert = socket.getPeerCertificate();
  const id = socket.authorized && cert ? certificateIdentity(cert) : undefined;
  return { transport: 'tls', ...(socket.remoteAddress ? { address: socket.remoteAddress } : {}), ...(id ? { cert: id } : {}) };
}

/** The peer a connection counts against for limits.maxConnectionsPerPeer. */
export function peerOf(identity: ClientIdentity): string {
  if (identity.peer) return `uid:${identity.peer.uid}`;
  if (identity.cert !== undefined) return `cert:${identity.cert}`;
  return identity.address === undefined ? identity.transport : `${identity.transport}:${identity.address}`;
}
