import { isAbsolute, join, resolve } from 'node:path';
import type { Logger } from '../log/logger.js';
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
  // The snapshot first: its lock keeps a second gateway off this dataDir before anything is read.
  const snapshot = location.kind === 'file' ? undefined : await Snapshot.open(join(dataDir, 'snapshot'));
  try {
    const backend = await openBackend(location, settings);
    const store = new KeyStore(backend, log, {
      timeoutMs: settings.timeoutMs,
      cacheRecords: settings.cacheRecords,
      ...(snapshot ? { snapshot, refreshMs: settings.refreshMs } : {}),
    });
    const lock = snapshot?.lockMechanism ?? (backend as { lockMechanism?: string }).lockMechanism;
    return { store, lock, snapshot: snapshot?.dir };
  } catch (err) {
    await snapshot?.close();
    throw err;
  }
}
