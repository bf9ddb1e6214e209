import type { AdapterRegistry } from '../../adapters/registry.js';
import { kekScheme } from '../../adapters/registry.js';
import type { WrappedKey } from '../../adapters/types.js';
import { withSecrets } from '../crypto/secret.js';
import type { VersionRecord, Wrap } from '../keystore/types.js';
import { GatewayError } from '../protocol/errors.js';
import { wrappedOf, type DekService } from './dek-service.js';

/**
 * One more wrap of version `v` of `keyId`, under `kek`: inside one KMS re-encrypted there (the
 * DEK never leaves it), else the DEK (from the cache, or unwrapped by whichever of the
 * version's KEKs answers) is wrapped. The new blob is unwrapped once and checked against the
 * commitment tag; nothing is stored here, so a failure leaves the key as it was.
 */
export async function wrapUnder(adapters: AdapterRegistry, deks: DekService, keyId: string, v: VersionRecord, kek: string): Promise<Wrap> {
  const ctx = { keyId, version: v.version };
  const commit = v.commit;
  if (commit === null) throw new GatewayError('NOT_FOUND', 'key version was destroyed');
  const wrapped = await adapters.use(kek, async (to) => {
    const sibling = v.wraps.find((w) => kekScheme(w.kek) === kekScheme(kek));
    const moved: WrappedKey | undefined =
      sibling === undefined
        ? undefined
        : await adapters.use(sibling.kek, (from) => from.rewrap(wrappedOf(sibling), ctx, to)).catch(() => undefined);
    const out = moved ?? (await withSecrets(async (scope) => to.wrap(await deks.copyInto(scope, keyId, v.version), ctx)));
    if (!(await deks.verify(to, out, keyId, v.version, commit))) {
      throw new GatewayError('INTERNAL', 'the new wrap failed its commitment check; nothing was changed');
    }
    return out;
  });
  return { kek, ...(wrapped.kekVersion === undefined ? {} : { kekVersion: wrapped.kekVersion }), wrapped: wrapped.blob.toString('base64') };
}
