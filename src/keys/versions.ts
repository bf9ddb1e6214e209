import { randomFillSync } from 'node:crypto';
import type { GuardedWrapper } from '../../adapters/guard.js';
import { commitTag } from '../crypto/commit.js';
import type { SecretScope } from '../crypto/secret.js';
import { findVersion, newestEnabled, type KeyRecord, type VersionRecord } from '../keystore/types.js';
import { GatewayError } from '../protocol/errors.js';
import type { KeyRef } from '../protocol/parser.js';

/** A new DEK version: its record (wrapped only) and the DEK, owned by the caller's scope. */
export interface MadeDek {
  readonly record: VersionRecord;
  readonly dek: Buffer;
}

/**
 * Makes DEK `version` of `keyId` under `wrapper`'s KEK: generated inside the
 * KMS where the adapter can (AWS GenerateDataKey), else random here and
 * wrapped. The plaintext DEK belongs to `scope`.
 */
export async function makeVersion(
  wrapper: GuardedWrapper,
  scope: SecretScope,
  keyId: string,
  version: number,
  created: string,
): Promise<MadeDek> {
  const ctx = { keyId, version };
  let dek: Buffer;
  let wrapped;
  if (wrapper.canGenerate) {
    const generated = await wrapper.generate(ctx);
    dek = scope.track(generated.dek);
    wrapped = generated;
  } else {
    dek = randomFillSync(scope.alloc());
    wrapped = await wrapper.wrap(dek, ctx);
  }
  const record: VersionRecord = {
    version,
    kek: wrapper.kek,
    ...(wrapped.kekVersion === undefined ? {} : { kekVersion: wrapped.kekVersion }),
    wrapped: wrapped.blob.toString('base64'),
    commit: commitTag(dek, keyId, version).toString('base64'),
    created,
    state: 'enabled',
  };
  return { record, dek };
}

/** What INFO shows of a key: metadata only, never a wrapped or unwrapped key. */
export interface KeyInfo {
  readonly id: string;
  readonly created: string;
  readonly state: 'enabled' | 'destroyed';
  readonly primary: number | null;
  readonly versions: ReadonlyArray<{
    readonly version: number;
    readonly kek: string;
    readonly kekVersion?: string;
    readonly created: string;
    readonly state: VersionRecord['state'];
    readonly destroyed?: string;
    /** An upper bound: ENC calls are reserved a block at a time. */
    readonly encryptionsReserved?: number;
  }>;
}

export function describeKey(record: KeyRecord): KeyInfo {
  const newest = newestEnabled(record);
  return {
    id: record.id,
    created: record.created,
    state: newest ? 'enabled' : 'destroyed',
    primary: newest?.version ?? null,
    versions: record.versions.map((v) => ({
      version: v.version,
      kek: v.kek,
      ...(v.kekVersion === undefined ? {} : { kekVersion: v.kekVersion }),
      created: v.created,
      state: v.state,
      ...(v.destroyed === undefined ? {} : { destroyed: v.destroyed }),
      ...(v.encryptions === undefined ? {} : { encryptionsReserved: v.encryptions }),
    })),
  };
}

/** What a request means to do with a version: `use` picks the newest, `decrypt` may read old ones. */
export type Purpose = 'use' | 'decrypt';

/** The highest-numbered version, whatever its state. */
export function lastVersion(record: KeyRecord): VersionRecord {
  return record.versions[record.versions.length - 1] as VersionRecord;
}

/** The version `ref` names for `purpose`, or the error a client gets. */
export function pickVersion(record: KeyRecord, ref: KeyRef, purpose: Purpose): number {
  if (ref.version === undefined) {
    const newest = newestEnabled(record);
    if (newest === undefined) throw new GatewayError('NOT_FOUND', 'key has no usable version');
    return newest.version;
  }
  const found = findVersion(record, ref.version);
  if (found === undefined) throw new GatewayError('NOT_FOUND', 'no such key version');
  if (found.state === 'destroyed') {
    throw purpose === 'decrypt'
      ? new GatewayError('DECRYPT_FAILED', 'key version was destroyed')
      : new GatewayError('NOT_FOUND', 'key version was destroyed');
  }
  return found.version;
}

/** A version after DESTROY: its wrapped DEK and commitment tag gone for good. */
export function destroyedVersion(v: VersionRecord): VersionRecord {
  return { ...v, wrapped: null, commit: null, state: 'destroyed', destroyed: new Date().toISOString() };
}
