import type { AdapterRegistry } from '../../adapters/registry.js';
import { withSecrets } from '../crypto/secret.js';
import type { VersionRecord } from '../keystore/types.js';
import { GatewayError } from '../protocol/errors.js';
import { wrappedOf, type DekService } from './dek-service.js';

/**
 * Each version wrapped under `kek` instead: inside one KMS re-encrypted there (the DEK never
 * leaves it), across KMSs unwrapped and wrapped. Every new blob is unwrapped once and checked
 * against the commitment tag; nothing is stored here, so a failure leaves the key as it was.
 */
export async function rewrapVersions(
  adapters: AdapterRegistry,
  deks: DekService,
  keyId: string,
  targets: readonly VersionRecord[],
  kek: string,
): Promise<Map<number, VersionRecord>> {
  const moved = new Map<number, VersionRecord>();
  await adapters.use(kek, async (to) => {
    for (const v of targets) {
      const ctx = { keyId, version: v.version };
      const stored = wrappedOf(v);
      const wrapped = await adapters.use(
        v.kek,
        async (from) =>
          (await from.rewrap(stored, ctx, to)) ??
          (await withSecrets(async (scope) => to.wrap(scope.track(await from.unwrap(stored, ctx)), ctx))),
      );
      if (!(await deks.verify(to, wrapped, keyId, v.version, v.commit as string))) {
        throw new GatewayError('INTERNAL', 'rewrapped key failed its commitment check; nothing was changed');
      }
      const { kekVersion: _old, ...rest } = v;
      moved.set(v.version, {
        ...rest,
        kek,
        wrapped: wrapped.blob.toString('base64'),
        ...(wrapped.kekVersion === undefined ? {} : { kekVersion: wrapped.kekVersion }),
      });
    }
  });
  return moved;
}
