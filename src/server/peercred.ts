import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

/** uid, gid and pid of a Unix socket's peer. */
export interface PeerCred {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
}

interface Addon {
  getPeerCred(fd: number): PeerCred;
}

let addon: Addon | null | undefined;
let loadError: string | undefined;

/** The SO_PEERCRED addon (build/peercred.node), or null with the reason in `peerCredUnavailable()`. */
function load(): Addon | null {
  if (addon !== undefined) return addon;
  // From src/server (tests) or dist/src/server (built): the addon sits in <root>/build.
  const candidates = [new URL('../../build/peercred.node', import.meta.url), new URL('../../../build/peercred.node', import.meta.url)];
  const path = candidates.find((u) => existsSync(u));
  if (!path) {
    loadError = 'build/peercred.node is missing (no C compiler at install?)';
    return (addon = null);
  }
  try {
    addon = createRequire(import.meta.url)(path.pathname) as Addon;
  } catch (err) {
    loadError = (err as Error).message;
    addon = null;
  }
  return addon;
}

/** Why peer credentials cannot be read, or undefined when they can. */
export function peerCredUnavailable(): string | undefined {
  return load() === null ? loadError : undefined;
}

/** The peer of a connected Unix socket, or undefined when the addon or the fd is not there. */
export function peerCredOf(socket: Socket): PeerCred | undefined {
  const a = load();
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (!a || typeof fd !== 'number' || fd < 0) return undefined;
  try {
    return a.getPeerCred(fd);
  } catch {
    return undefined;
  }
}
