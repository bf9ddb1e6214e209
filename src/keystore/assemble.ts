import { isAbsolute, join, resolve } from 'node:path';
import type { Logger } from '../log/logger.js';
import { FileBackend } from './file/index.js';
import { KeyStore } from './key-store.js';
import { openBackend } from './open.js';
import type { KeyStoreSettings } from './settings.js';
import { Snapshot } from './snapshot.js';
import { parseStoreUrl, type StoreLocation } from './url.js';

/** The store's location from `keystore.url` (default `file://<dataDir>/keys`), relative folders resolved against `baseDir`. */
export function storeLocation(settings: Pick<KeyStoreSettings, 'url'>, dataDir: string, baseDir: string): StoreLocation {
  if (settings.url === undefined) return { kind: 'file', dir: join(dataDir, 'keys') };
  const location = parseStoreUrl(settings.url);
  return location.kind === 'file' && !isAbsolute(location.dir) ? { kind: 'file', dir: resolve(baseDir, location.dir) } : location;
}

/** An opened key store and what the start-up log says about it. */
export interface OpenedStore {
  readonly store: KeyStore;
  /** How this gateway holds its folder: the file store's lock, or the snapshot's. */
  readonly lock: string | undefined;
  /** The snapshot folder, for a shared store. */
  readonly snapshot: string | undefined;
}

/**
 * Opens the key store: a folder is this gateway's alone (locked), refreshed by nobody; an
 * object store is shared, so it gets a background refresh and a local snapshot in `dataDir`.
 */
export async function openKeyStore(
  location: StoreLocation,
  settings: KeyStoreSettings,
  dataDir: string,
  log: Logger,
): Promise<OpenedStore> {
  const limits = { timeoutMs: settings.timeoutMs, cacheRecords: settings.cacheRecords };
  if (location.kind === 'file') {
    // This gateway's alone (its lock), so nobody else changes it: nothing to refresh.
    const backend = await FileBackend.open(location.dir);
    return { store: new KeyStore(backend, log, limits), lock: backend.lockMechanism, snapshot: undefined };
  }
  // The snapshot first: its lock keeps a second gateway off this dataDir before anything is read.
  const snapshot = await Snapshot.open(join(dataDir, 'snapshot'));
  try {
    const store = new KeyStore(await openBackend(location, settings), log, { ...limits, snapshot, refreshMs: settings.refreshMs });
    return { store, lock: snapshot.lockMechanism, snapshot: snapshot.dir };
  } catch (err) {
    await snapshot.close();
    throw err;
  }
}
