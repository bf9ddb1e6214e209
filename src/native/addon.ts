import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

/** uid, gid and pid of a Unix socket's peer. */
export interface PeerCred {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
}

/** What native/peercred.c exports. */
export interface NativeAddon {
  getPeerCred(fd: number): PeerCred;
  /** True when this open file now holds an exclusive flock(2); false when another holds one. Never blocks. */
  flockExclusive(fd: number): boolean;
  /**
   * Sends `message` as one datagram to the Unix datagram socket `path` (`$NOTIFY_SOCKET`; a leading
   * `@` names an abstract socket), as sd_notify(3) does. Returns the bytes sent; throws on failure.
   */
  sdNotify(path: string, message: string): number;
}

/** An addon from `<root>/build/<name>.node`, or the reason it cannot be loaded. */
export function loadAddon<T>(name: string): { addon: T } | { error: string } {
  // From src/native (tests) or dist/src/native (built): the addon sits in <root>/build.
  const candidates = [new URL(`../../build/${name}.node`, import.meta.url), new URL(`../../../build/${name}.node`, import.meta.url)];
  const path = candidates.find((u) => existsSync(u));
  if (!path) return { error: `build/${name}.node is missing (no C compiler at install?)` };
  try {
    return { addon: createRequire(import.meta.url)(path.pathname) as T };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

let addon: NativeAddon | null | undefined;
let loadError: string | undefined;

/** The addon (build/peercred.node), loaded once, or null with the reason in `nativeUnavailable()`. */
export function loadNative(): NativeAddon | null {
  if (addon !== undefined) return addon;
  const loaded = loadAddon<NativeAddon>('peercred');
  if ('error' in loaded) {
    loadError = loaded.error;
    return (addon = null);
  }
  return (addon = loaded.addon);
}

/** Why the addon cannot be used, or undefined when it can. */
export function nativeUnavailable(): string | undefined {
  return loadNative() === null ? loadError : undefined;
}
