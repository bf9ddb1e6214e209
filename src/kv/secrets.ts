import { open, seal } from '../crypto/envelope.js';
import { NoncePool } from '../crypto/nonce.js';
import { withSecrets } from '../crypto/secret.js';
import type { DekService } from '../keys/dek-service.js';
import type { KeyService } from '../keys/key-service.js';
import { destroyedVersion, lastVersion } from '../keys/versions.js';
import type { KeyStore } from '../keystore/key-store.js';
import { findVersion, type KeyRecord, type KvMeta, type VersionRecord } from '../keystore/types.js';
import { GatewayError } from '../protocol/errors.js';

/** Versions a secret keeps with their value unless its metadata says otherwise (Vault's default). */
export const DEFAULT_MAX_VERSIONS = 10;
/** Largest secret version, as JSON: pg_tde's keys are ~100 bytes; Vault's own cap is 1 MiB per request. */
export const MAX_SECRET_BYTES = 512 * 1024;

/** AAD of a sealed secret value, so no ENC envelope of the same key id passes for one. */
const VALUE_AAD = Buffer.from('kv-value', 'latin1');

/** One version of a secret, as KV v2 metadata shows it. */
export interface SecretVersion {
  readonly version: number;
  readonly created: string;
  /** When the version's value was destroyed (all versions deleted, or past `maxVersions`). */
  readonly destroyed?: string;
}

export interface SecretMetadata {
  readonly created: string;
  readonly updated: string;
  readonly current: number;
  readonly oldest: number;
  readonly maxVersions: number;
  readonly casRequired: boolean;
  readonly customMetadata: Readonly<Record<string, string>>;
  readonly versions: readonly SecretVersion[];
}

export interface SecretValue {
  readonly data: Record<string, unknown>;
  readonly version: SecretVersion;
}

const versionOf = (v: VersionRecord): SecretVersion => ({
  version: v.version,
  created: v.created,
  ...(v.destroyed === undefined ? {} : { destroyed: v.destroyed }),
});

/** The KV record of `id`, or NOT_FOUND: no record, a plain kmsgw key, or a secret deleted with all its versions. */
function liveSecret(record: KeyRecord | undefined): KeyRecord & { kv: KvMeta } {
  if (record?.kv === undefined || record.kv.deleted !== undefined) throw new GatewayError('NOT_FOUND', 'no such secret');
  return record as KeyRecord & { kv: KvMeta };
}

/**
 * KV v2 secrets kept as kmsgw keys (docs/vault-api.md): version N of a secret is DEK version N,
 * and its JSON data is stored only sealed under that DEK (AES-256-GCM envelope), in the same
 * record and store as every key. Reads open it with the DEK from the DEK cache (TTL, zeroized);
 * the plaintext value itself is never cached. Knows nothing of HTTP or Vault's JSON.
 */
export class Secrets {
  private readonly nonces = new NoncePool();

  constructor(
    private readonly keys: Pick<KeyService, 'append' | 'shred' | 'list' | 'countEncryption'>,
    private readonly deks: Pick<DekService, 'withDek' | 'evict'>,
    private readonly store: Pick<KeyStore, 'fetch' | 'get'>,
  ) {}

  /** The newest version that still has its value, or version `version`. */
  async read(id: string, version?: number): Promise<SecretValue> {
    const record = liveSecret(await this.store.fetch(id));
    const target = version === undefined ? record.versions.findLast((v) => v.value !== undefined) : findVersion(record, version);
    if (target?.value === undefined) throw new GatewayError('NOT_FOUND', 'no such secret version');
    const envelope = Buffer.from(target.value, 'base64');
    const text = await this.deks.withDek(id, target.version, (dek) =>
      withSecrets((scope) => scope.track(open({ dek, keyId: id, version: target.version, aad: VALUE_AAD }, envelope)).toString('utf8')),
    );
    return { data: JSON.parse(text) as Record<string, unknown>, version: versionOf(target) };
  }

  /**
   * Stores `data` as the next version, sealed under its own new DEK, in one compare-and-swap;
   * `cas` (Vault's `options.cas`) must then name the current version (0: no secret yet).
   * Versions past `maxVersions` lose their DEK and value in the same write.
   */
  async write(id: string, data: Record<string, unknown>, cas: number | undefined): Promise<SecretVersion> {
    const json = JSON.stringify(data);
    if (Buffer.byteLength(json) > MAX_SECRET_BYTES)
      throw new GatewayError('TOO_LARGE', `a secret is at most ${MAX_SECRET_BYTES} bytes of JSON`);
    let pruned: number[] = [];
    const made = await withSecrets(async (scope) => {
      const plaintext = scope.alloc(Buffer.byteLength(json));
      plaintext.write(json, 'utf8');
      return this.keys.append(
        id,
        (current) => {
          if (current !== undefined && current.kv === undefined) throw new GatewayError('EXISTS', 'a kmsgw key, not a secret, has this id');
          const live = current?.kv !== undefined && current.kv.deleted === undefined;
          const now = live ? lastVersion(current).version : 0;
          if (cas === undefined && live && current.kv?.casRequired === true) {
            throw new GatewayError('BAD_REQUEST', 'check-and-set parameter required for this call');
          }
          if (cas !== undefined && cas !== now)
            throw new GatewayError('BAD_REQUEST', 'check-and-set parameter did not match the current version');
          // Numbers go on after a delete, so no cached DEK of an old version can be taken for a new one.
          return current === undefined ? 1 : lastVersion(current).version + 1;
        },
        (record, version, dek) => {
          const sealed = seal({ dek, keyId: id, version, aad: VALUE_AAD }, plaintext, this.nonces).toString('base64');
          const previous = record.kv !== undefined && record.kv.deleted === undefined ? record.kv : undefined;
          const kv: KvMeta = {
            casRequired: previous?.casRequired ?? false,
            maxVersions: previous?.maxVersions ?? DEFAULT_MAX_VERSIONS,
            customMetadata: previous?.customMetadata ?? {},
            updated: new Date().toISOString(),
          };
          const withValue = record.versions.map((v) => (v.version === version ? { ...v, value: sealed } : v));
          const kept = new Set(withValue.filter((v) => v.value !== undefined).slice(-kv.maxVersions));
          pruned = withValue.filter((v) => v.state === 'enabled' && !kept.has(v)).map((v) => v.version);
          return { ...record, kv, versions: withValue.map((v) => (v.state === 'enabled' && !kept.has(v) ? destroyedVersion(v) : v)) };
        },
      );
    });
    for (const version of pruned) this.deks.evict(id, version);
    // The value's seal is an encryption with the new DEK: it counts against its nonce budget like an ENC.
    await this.keys.countEncryption(id, made.version);
    return { version: made.version, created: new Date().toISOString() };
  }

  async metadata(id: string): Promise<SecretMetadata> {
    const record = liveSecret(await this.store.fetch(id));
    const kept = record.versions.filter((v) => v.value !== undefined);
    return {
      created: record.created,
      updated: record.kv.updated,
      current: lastVersion(record).version,
      oldest: kept[0]?.version ?? 0,
      maxVersions: record.kv.maxVersions,
      casRequired: record.kv.casRequired,
      customMetadata: record.kv.customMetadata,
      versions: record.versions.map(versionOf),
    };
  }

  /**
   * The names directly under `dir` (an id prefix ending in `/`, or a mount's root): secrets,
   * and folders as `name/` (shown when a secret under them is), sorted; deleted secrets and ids
   * `visible` refuses are not shown.
   */
  async list(dir: string, visible: (id: string) => boolean = () => true): Promise<string[]> {
    const names = new Set<string>();
    for (const id of await this.keys.list(dir)) {
      if (!visible(id)) continue;
      const record = await this.store.get(id);
      if (record?.kv === undefined || record.kv.deleted !== undefined) continue;
      const rest = id.slice(dir.length);
      const slash = rest.indexOf('/');
      names.add(slash === -1 ? rest : rest.slice(0, slash + 1));
    }
    return [...names].sort();
  }

  /**
   * Deletes the secret with every version: each DEK, recovery copy and sealed value is destroyed
   * (crypto-shred). Deleting what does not exist succeeds, as in Vault.
   */
  async deleteAll(id: string): Promise<void> {
    try {
      await this.keys.shred(id, (record) => {
        const secret = liveSecret(record);
        return { ...secret, kv: { ...secret.kv, deleted: new Date().toISOString() } };
      });
    } catch (err) {
      if (!(err instanceof GatewayError && err.code === 'NOT_FOUND')) throw err;
    }
  }
}
