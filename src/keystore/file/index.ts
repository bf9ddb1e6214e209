import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open as openFile, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { StoreError, type ListedObject, type StoreBackend, type StoredObject, type WriteResult } from '../backend.js';
import { KeyedChains } from '../chains.js';
import { acquireStoreLock, type StoreLock } from '../lock.js';
import { escapeId, idFromObjectName, OBJECT_SUFFIX } from '../names.js';
import type { BackendModule, BackendSettings, OpenOptions } from '../open.js';
import type { StoreLocation } from '../url.js';

const TMP_SUFFIX = '.tmp';
/**
 * Longest escaped name kept readable. File names may have 255 bytes; a temporary file adds
 * `.<pid>.tmp`, so names stay well below that. A 256-character id of `/` or `:` escapes to 768.
 */
const MAX_READABLE_NAME = 200;

/**
 * Key id → file name: the object-store escaping (names.ts). An id whose escaped name would be
 * too long for the file system is stored under its first characters, `~` and the SHA-256 of
 * the whole id (`~` never appears in an escaped name, so the two forms cannot collide).
 */
export function fileNameFor(id: string): string {
  const escaped = escapeId(id);
  if (escaped.length + OBJECT_SUFFIX.length <= MAX_READABLE_NAME) return escaped + OBJECT_SUFFIX;
  return `${escaped.slice(0, 64)}~${createHash('sha256').update(id, 'utf8').digest('hex')}${OBJECT_SUFFIX}`;
}

/** `no space left on device (ENOSPC)`: the cause of a storage failure, safe to show a client. */
export function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const known: Record<string, string> = {
    ENOSPC: 'no space left on device',
    EDQUOT: 'disk quota exceeded',
    EROFS: 'read-only file system',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EIO: 'input/output error',
    ENAMETOOLONG: 'file name too long',
  };
  return code === undefined ? 'unexpected error' : `${known[code] ?? 'error'} (${code})`;
}

/**
 * One JSON file per key id in a folder on this host. A write goes to a temporary file that
 * is fsynced, renamed over the old one, and the folder fsynced, so a crash leaves the old or
 * the new record, never a torn one. The revision is the file's inode and change time (a rename
 * makes a new inode). A lock that dies with its holder keeps other processes from writing the
 * folder, and writes of one id are serialised here, so the compare-and-swap is exact.
 */
export class FileBackend {
  private readonly chains = new KeyedChains();
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly lock: StoreLock | undefined,
  ) {}

  get location(): string {
    return `file://${this.dir}`;
  }

  /** How the folder's lock is held, for the start-up log (undefined when read-only). */
  get lockMechanism(): string | undefined {
    return this.lock?.mechanism;
  }

  /** Opens (creating if needed) `dir`; removes writes a crash left behind. */
  static async open(dir: string, options: OpenOptions = {}): Promise<FileBackend> {
    if (options.readOnly) {
      await stat(dir).catch((err: unknown) => {
        throw new StoreError(`key store folder ${dir}: ${describeFsError(err)}`, { cause: err });
      });
      return new FileBackend(dir, undefined);
    }
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const backend = new FileBackend(dir, await acquireStoreLock(dir));
    try {
      await backend.removeLeftovers();
    } catch (err) {
      await backend.close();
      throw err;
    }
    return backend;
  }

  async read(id: string): Promise<StoredObject | undefined> {
    const path = join(this.dir, fileNameFor(id));
    let handle: FileHandle;
    try {
      handle = await openFile(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw fsError('read', err);
    }
    try {
      const [info, body] = await Promise.all([handle.stat({ bigint: true }), handle.readFile()]);
      return { body, revision: revisionOf(info) };
    } catch (err) {
      throw fsError('read', err);
    } finally {
      await handle.close();
    }
  }

  write(id: string, body: Buffer, expected: string | null): Promise<WriteResult> {
    if (this.lock === undefined) return Promise.reject(new StoreError('key store was opened read-only'));
    if (this.closed) return Promise.reject(new StoreError('key store is closed'));
    return this.chains.run(id, () => this.writeNow(id, body, expected));
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      throw fsError('list', err);
    }
    const escapedPrefix = escapeId(prefix);
    for (const name of names.sort()) {
      if (!name.endsWith(OBJECT_SUFFIX)) continue;
      const hashed = name.includes('~');
      if (!hashed && !name.startsWith(escapedPrefix)) continue;
      if (hashed && !name.startsWith(escapedPrefix.slice(0, 64))) continue;
      const id = hashed ? await this.idOfHashed(name) : idFromObjectName('', name);
      if (id === undefined || !id.startsWith(prefix)) continue;
      try {
        const info = await stat(join(this.dir, name), { bigint: true });
        yield { id, revision: revisionOf(info) };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw fsError('list', err);
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.chains.drain();
    await this.lock?.release();
  }

  private async writeNow(id: string, body: Buffer, expected: string | null): Promise<WriteResult> {
    if (this.closed) throw new StoreError('key store is closed');
    const path = join(this.dir, fileNameFor(id));
    const current = await stat(path, { bigint: true }).then(revisionOf, (err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw fsError('write', err);
    });
    if (current !== expected) return { ok: false, conflict: true };
    const tmp = `${path}.${process.pid}${TMP_SUFFIX}`;
    let handle: FileHandle | undefined;
    try {
      handle = await openFile(tmp, 'w', 0o600);
      await handle.writeFile(body);
      await handle.sync();
      await handle.close();
      handle = undefined;
      await rename(tmp, path);
      await syncDir(this.dir);
      return { ok: true, revision: revisionOf(await stat(path, { bigint: true })) };
    } catch (err) {
      await handle?.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw fsError('write', err);
    }
  }

  /** The id a hashed (long-id) file holds, read from the record itself. */
  private async idOfHashed(name: string): Promise<string | undefined> {
    try {
      const { body } = (await this.readName(name)) ?? {};
      const id = body === undefined ? undefined : (JSON.parse(body.toString('utf8')) as { id?: unknown }).id;
      return typeof id === 'string' && fileNameFor(id) === name ? id : undefined;
    } catch {
      return undefined; // a damaged file: `kmsgw store verify` names it
    }
  }

  private async readName(name: string): Promise<{ body: Buffer } | undefined> {
    try {
      const handle = await openFile(join(this.dir, name), constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        return { body: await handle.readFile() };
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  private async removeLeftovers(): Promise<void> {
    let removed = 0;
    for (const name of await readdir(this.dir)) {
      if (!name.endsWith(TMP_SUFFIX)) continue;
      // Left by a write that was interrupted (kill -9, power loss). It may hold a version that
      // was destroyed since: remove it, so no copy of a destroyed wrapped DEK outlives DESTROY.
      // The lock is held, so no other gateway is writing it.
      await unlink(join(this.dir, name));
      removed++;
    }
    if (removed > 0) await syncDir(this.dir);
  }
}

/** The folder's kind of store. */
export function open(location: Extract<StoreLocation, { kind: 'file' }>, _settings: BackendSettings, options?: OpenOptions) {
  if (!isAbsolute(location.dir)) return Promise.reject(new StoreError(`key store folder ${location.dir} must be an absolute path`));
  return FileBackend.open(location.dir, options);
}

// Compile-time conformance: the class is a StoreBackend, the module a BackendModule.
void (null as unknown as FileBackend satisfies StoreBackend);
void ({ open } satisfies BackendModule<'file'>);

function revisionOf(info: { ino: bigint; ctimeNs: bigint; size: bigint }): string {
  return `${info.ino}-${info.ctimeNs}-${info.size}`;
}

function fsError(op: string, err: unknown): StoreError {
  return new StoreError(`key store ${op} failed: ${describeFsError(err)}`, { cause: err });
}

async function syncDir(dir: string): Promise<void> {
  const handle = await openFile(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
