import { constants } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { GatewayError } from '../protocol/errors.js';
import { KeyStoreError } from './errors.js';
import { acquireStoreLock, type StoreLock } from './lock.js';
import { KeyRecordSchema, type KeyRecord, type KeyStore } from './types.js';

export { KeyStoreError } from './errors.js';

const SUFFIX = '.json';

/** Key id → file name: characters other than A-Z a-z 0-9 . _ - become %XX, so `/` and `:` are safe. */
export function fileNameFor(id: string): string {
  return id.replace(/[^A-Za-z0-9._-]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`) + SUFFIX;
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
        throw new GatewayError('INTERNAL', 'key store write failed', { cause: err });
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
    for (const name of await readdir(this.dir)) {
      if (!name.endsWith(SUFFIX)) continue; // temporary files of an interrupted write
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
  }

  private async writeFile(record: KeyRecord): Promise<void> {
    const path = join(this.dir, fileNameFor(record.id));
    const tmp = `${path}.${process.pid}.tmp`;
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
