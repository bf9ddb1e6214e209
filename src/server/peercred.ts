import type { Socket } from 'node:net';
import { loadNative, nativeUnavailable, type PeerCred } from '../native/addon.js';

export type { PeerCred } from '../native/addon.js';

/** Why peer credentials cannot be read, or undefined when they can. */
export function peerCredUnavailable(): string | undefined {
  return nativeUnavailable();
}

/** The peer of a connected Unix socket, or undefined when the addon or the fd is not there. */
export function peerCredOf(socket: Socket): PeerCred | undefined {
  const a = loadNative();
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (!a || typeof fd !== 'number' || fd < 0) return undefined;
  try {
    return a.getPeerCred(fd);
  } catch {
    return undefined;
  }
}
