import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { GatewayError } from '../protocol/errors.js';
import { KeyStoreError } from './errors.js';
import { acquireStoreLock, type StoreLock } from './lock.js';
import { KeyRecordSchema, type KeyRecord, type KeyStore } from './types.js';

export { KeyStoreError } from './errors.js';

const SUFFIX = '.json';
const TMP_SUFFIX = '.tmp';
/**
 * Longest escaped name kept readable. File names may have 255 bytes; a temporary file adds
 * `.<pid>.tmp`, so names stay well below that. A 256-character id of `/` or `:` escapes to 768.
 */
const MAX_READABLE_NAME = 200;

/**
 * Key id → file name: characters other than A-Z a-z 0-9 . _ - become %XX, so `/` and `:` are
 * safe. An id whose escaped name would be too long for the file system is stored under its
 * first characters, `~` and the SHA-256 of the whole id (`~` never appears in an escaped name,
 * so the two forms cannot collide).
 */
export function fileNameFor(id: string): string {
  const escaped = id.replace(/[^A-Za-z0-9._-]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
  if (escaped.length + SUFFIX.length <= MAX_READABLE_NAME) return escaped + SUFFIX;
  return `${escaped.slice(0, 64)}~${createHash('sha256').update(id, 'utf8').digest('hex')}${SUFFIX}`;
}

/** `no space left on device (ENOSPC)`: the cause of a storage failure, safe to show a client. */
function describeStorageError(err: unknown): string {
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
 * File-backed key store: one JSON file per key id under `<dir>/keys`.
 * Each write goes to a temporary file that is fsynced, renamed over the old
 * one, and the folder fsynced, so a crash leaves the old or the new record,
 * never a torn one. A lock that dies with its holder keeps a second gateway off the same store.
 */
export class FileKeyStore implements KeyStore {
  private readonly records = new Map<string, KeyRecord>();
  private sortedIds: string[] | undefined;
  // Writes under way, so close() can wait for them. Writes to one id are ordered by the caller (KeyService).
  private readonly writes = new Set<Promise<void>>();
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly lock: StoreLock,
  ) {}

  /** Opens (creating if needed) the store in `dir`; throws `KeyStoreError` naming any bad file. */
  static async open(dir: string): Promise<FileKeyStore> {
    const keysDir = join(dir, 'keys');
    await mkdir(keysDir, { recursive: true, mode: 0o700 });
    const store = new FileKeyStore(keysDir, await acquireStoreLock(dir));
    try {
      await store.load();
    } catch (err) {
      await store.lock.release();
      throw err;
    }
    return store;
  }

  /** How the store's lock is held (flock, or the abstract-socket fallback), for the start-up log. */
  get lockMechanism(): string {
    return this.lock.mechanism;
  }

  get(id: string): KeyRecord | undefined {
    return this.records.get(id);
  }

  list(prefix = ''): string[] {
    this.sortedIds ??= [...this.records.keys()].sort();
    return prefix === '' ? [...this.sortedIds] : this.sortedIds.filter((id) => id.startsWith(prefix));
  }

  put(record: KeyRecord): Promise<void> {
    if (this.closed) return Promise.reject(new GatewayError('INTERNAL', 'key store is closed'));
    const checked = KeyRecordSchema.safeParse(record);
    if (!checked.success) {
      return Promise.reject(new GatewayError('INTERNAL', 'refusing to store an invalid key record', { cause: checked.error }));
    }
    const parsed = checked.data;
    const write = this.writeFile(parsed).then(
      () => {
        if (!this.records.has(parsed.id)) this.sortedIds = undefined;
        this.records.set(parsed.id, parsed);
      },
      (err: unknown) => {
        throw new GatewayError('STORE_UNAVAILABLE', `key store write failed: ${describeStorageError(err)}`, { cause: err });
      },
    );
    const settled = write.then(
      () => undefined,
      () => undefined,
    );
    this.writes.add(settled);
    void settled.then(() => this.writes.delete(settled));
    return write;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.writes.values()]);
    await this.lock.release();
  }

  private async load(): Promise<void> {
    let removed = 0;
    for (const name of await readdir(this.dir)) {
      if (name.endsWith(TMP_SUFFIX)) {
        // Left by a write that was interrupted (kill -9, power loss). It may hold a version that
        // was destroyed since: remove it, so no copy of a destroyed wrapped DEK outlives DESTROY.
        // The lock is held, so no other gateway is writing it.
        await unlink(join(this.dir, name));
        removed++;
        continue;
      }
      if (!name.endsWith(SUFFIX)) continue;
      const path = join(this.dir, name);
      let record: KeyRecord;
      try {
        record = KeyRecordSchema.parse(JSON.parse(await readFile(path, 'utf8')));
      } catch (err) {
        throw new KeyStoreError(`key store file ${path} is not a valid key record; fix or move it (it is never overwritten)`, {
          cause: err,
        });
      }
      if (fileNameFor(record.id) !== name) {
        throw new KeyStoreError(`key store file ${path} holds key id ${JSON.stringify(record.id)}, which belongs in another file`);
      }
      this.records.set(record.id, record);
    }
    if (removed > 0) await syncDir(this.dir);
  }

  private async writeFile(record: KeyRecord): Promise<void> {
    const path = join(this.dir, fileNameFor(record.id));
    const tmp = `${path}.${process.pid}${TMP_SUFFIX}`;
    let handle: FileHandle | undefined;
    try {
      handle = await open(tmp, 'w', 0o600);
      await handle.writeFile(`${JSON.stringify(record, null, 2)}\n`, 'utf8');
      await handle.sync();
      await handle.close();
      handle = undefined;
      await rename(tmp, path);
      await syncDir(this.dir);
    } catch (err) {
      await handle?.close().catch(() => undefined);
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
