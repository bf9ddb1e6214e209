import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, realpath, type FileHandle } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { loadNative, nativeUnavailable, type NativeAddon } from '../native/addon.js';
import { KeyStoreError } from './errors.js';

/** The lock file's name inside the data folder. */
export const LOCK_FILE = 'keystore.lock';

/**
 * One gateway's hold on a store. The kernel drops it when the holder dies, however it
 * dies (SIGKILL, OOM, a container's PID 1 killed), so a crash never leaves a lock behind;
 * the lock file's pid is written for humans and never read to decide anything.
 */
export interface StoreLock {
  /** How the lock is held, for the start-up log: `flock <file>` or `abstract socket @<name> (…why)`. */
  readonly mechanism: string;
  /** Gives the lock up. Idempotent. */
  release(): Promise<void>;
}

/** For tests: which addon to use (null: behave as if it could not load). */
export interface LockOptions {
  /** @default the addon built at install (build/peercred.node), when it loads */
  readonly addon?: Pick<NativeAddon, 'flockExclusive'> | null;
}

/**
 * Takes the lock of the store in `dir`: flock(2) on `<dir>/keystore.lock` through the
 * native addon, or, when the addon cannot load, an abstract Unix socket named after the
 * store's real path. Throws `KeyStoreError` when another live gateway holds it.
 */
export async function acquireStoreLock(dir: string, options: LockOptions = {}): Promise<StoreLock> {
  const path = join(dir, LOCK_FILE);
  // No O_TRUNC: the holder's pid stays readable until the lock is ours. No symlinks followed.
  const handle = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  let server: Server | undefined;
  try {
    const addon = options.addon === undefined ? loadNative() : options.addon;
    let why = `native addon unavailable: ${nativeUnavailable() ?? 'disabled'}`;
    if (addon !== null) {
      let locked: boolean | undefined;
      try {
        locked = addon.flockExclusive(handle.fd);
      } catch (err) {
        // A filesystem without flock (some network or FUSE mounts): the socket still excludes.
        why = `flock failed on ${path}: ${(err as Error).message}`;
      }
      if (locked === false) throw await inUse(dir, path, `${path} is flock-ed`);
      if (locked === true) {
        await writePid(handle);
        return held(handle, `flock ${path}`);
      }
    }
    const name = await socketName(dir);
    const label = `abstract socket @${name.slice(1)}`;
    server = await bindAbstract(name).catch(async (err: unknown) => {
      throw (err as NodeJS.ErrnoException).code === 'EADDRINUSE' ? await inUse(dir, path, `${label} is bound`) : err;
    });
    await writePid(handle);
    return held(handle, `${label} (${why})`, server);
  } catch (err) {
    server?.close();
    await handle.close().catch(() => undefined);
    throw err;
  }
}

/** `\0kmsgw-store-<sha256 of the real path>`: one name per store, however the path was spelt. */
export async function socketName(dir: string): Promise<string> {
  return `\0kmsgw-store-${createHash('sha256')
    .update(await realpath(dir))
    .digest('hex')}`;
}

async function inUse(dir: string, path: string, how: string): Promise<KeyStoreError> {
  const pid = (await readFile(path, 'utf8').catch(() => '')).trim();
  const named = /^\d+$/.test(pid) ? ` (its lock file names pid ${pid})` : '';
  return new KeyStoreError(
    `key store ${dir} is in use by another running gateway${named}: ${how}; two gateways must not share a store (stop the other one, or give this one its own dataDir)`,
  );
}

async function writePid(handle: FileHandle): Promise<void> {
  await handle.truncate(0);
  await handle.write(`${process.pid}\n`, 0);
}

/** A lock whose file handle stays open for the store's life; `server` is the abstract socket, if that is the lock. */
function held(handle: FileHandle, mechanism: string, server?: Server): StoreLock {
  let released: Promise<void> | undefined;
  return {
    mechanism,
    release() {
      // Truncated while still held, so no later holder's pid is wiped; closing the handle drops a flock.
      // The file is never unlinked: one gateway could lock the old inode while another makes a new one.
      released ??= (async () => {
        await handle.truncate(0).catch(() => undefined);
        await handle.close();
        if (server) await new Promise<void>((done) => server.close(() => done()));
      })();
      return released;
    },
  };
}

function bindAbstract(name: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer((conn) => conn.destroy());
    server.once('error', reject);
    server.listen(name, () => {
      server.off('error', reject);
      // The store's lock must not keep the process alive on its own.
      server.unref();
      resolve(server);
    });
  });
}
