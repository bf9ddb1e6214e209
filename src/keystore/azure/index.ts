import { StoreError, type StoreBackend } from '../backend.js';

/** Placeholder until the backend lands. */
export function open(): Promise<StoreBackend> {
  return Promise.reject(new StoreError('the azure key store is not built yet'));
}
