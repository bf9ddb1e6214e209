/** The store on disk could not be opened; start-up stops with this. */
export class KeyStoreError extends Error {
  override readonly name = 'KeyStoreError';
  readonly code = 'KEYSTORE' as const;
}
