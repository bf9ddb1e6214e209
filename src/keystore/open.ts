import type { StoreBackend } from './backend.js';
import type { KeyStoreSettings } from './settings.js';
import type { StoreKind, StoreLocation } from './url.js';

/** What every backend folder's index.ts exports: how to open one location of its kind. */
export interface BackendModule<K extends StoreKind = StoreKind> {
  open(location: Extract<StoreLocation, { kind: K }>, settings: BackendSettings, options?: OpenOptions): Promise<StoreBackend>;
}

/** How a backend is opened. */
export interface OpenOptions {
  /**
   * Read only (`kmsgw store verify`, the source of `store copy`): writes are refused and a
   * file store takes no lock, so a running gateway's store can be read.
   * @default false
   */
  readonly readOnly?: boolean;
}

/** The part of `keystore` settings a backend reads; timeouts are the KeyStore's (it aborts the signal). */
export type BackendSettings = Pick<KeyStoreSettings, 'endpoint' | 'forcePathStyle' | 'region'>;

// Loaded on first use, as KEK adapters are: a file-store gateway never loads a cloud storage SDK.
const LOADERS: { readonly [K in StoreKind]: () => Promise<BackendModule<K>> } = {
  file: () => import('./file/index.js'),
  s3: () => import('./s3/index.js'),
  gs: () => import('./gcs/index.js'),
  azblob: () => import('./azure/index.js'),
};

/** Opens the backend for `location` (a file location's dir must already be absolute). */
export async function openBackend(location: StoreLocation, settings: BackendSettings, options: OpenOptions = {}): Promise<StoreBackend> {
  const load = LOADERS[location.kind] as () => Promise<BackendModule>;
  return (await load()).open(location, settings, options);
}
