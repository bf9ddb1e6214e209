import { randomFillSync } from 'node:crypto';
import type { KekHealth } from '../../adapters/health.js';
import type { AdapterRegistry } from '../../adapters/registry.js';
import type { WrappedKey } from '../../adapters/types.js';
import { commitTag } from '../crypto/commit.js';
import type { SecretScope } from '../crypto/secret.js';
import { findVersion, newestEnabled, type KeyRecord, type VersionRecord, type Wrap } from '../keystore/types.js';
import { GatewayError } from '../protocol/errors.js';
import type { KeyRef } from '../protocol/parser.js';
import { combine } from './failover.js';
import type { LastUnwrap, UnwrapLedger } from './kek-order.js';

/** A new DEK version: its record (wrapped only) and the DEK, owned by the caller's scope. */
export interface MadeDek {
  readonly record: VersionRecord;
  readonly dek: Buffer;
}

/** How a new version is made under several KEKs. */
export interface MakeOptions {
  /** The KEKs to wrap under, in the order the record lists them. */
  readonly keks: readonly string[];
  /** The same KEKs, most preferred first (`kms.preference`): the first that can generate makes the DEK. */
  readonly preferred: readonly string[];
  /** Fewest wraps for the version to be stored; the missing ones become `pending`. */
  readonly minWraps: number;
  readonly created: string;
  /** Unwraps a new blob once and compares it with the commitment tag. */
  readonly verify: (kek: string, wrapped: WrappedKey, commit: string) => Promise<boolean>;
}

function toWrap(kek: string, w: WrappedKey): Wrap {
  return { kek, ...(w.kekVersion === undefined ? {} : { kekVersion: w.kekVersion }), wrapped: w.blob.toString('base64') };
}

function transient(err: unknown): boolean {
  return err instanceof GatewayError && (err.code === 'KMS_UNAVAILABLE' || err.code === 'THROTTLED');
}

/**
 * Makes DEK `version` of `keyId` under every KEK of `options.keks`: generated inside a KMS where
 * one can (AWS GenerateDataKey; the first such KEK in preference order), else random here; then
 * wrapped under the others, each new blob checked against the commitment tag (with one KEK, as
 * before, a wrap is trusted as the KMS returned it). Stored only with at least `minWraps` wraps;
 * the KEKs that failed come back as `pending`. The plaintext DEK belongs to `scope`.
 */
export async function makeVersion(
  adapters: AdapterRegistry,
  scope: SecretScope,
  keyId: string,
  version: number,
  options: MakeOptions,
): Promise<MadeDek> {
  const ctx = { keyId, version };
  const wraps = new Map<string, Wrap>();
  const failures = new Map<string, unknown>();
  let dek: Buffer | undefined;
  for (const kek of options.preferred) {
    if (!(await adapters.use(kek, (w) => Promise.resolve(w.canGenerate)))) continue;
    try {
      const generated = await adapters.use(kek, (w) => w.generate(ctx));
      dek = scope.track(generated.dek);
      wraps.set(kek, toWrap(kek, generated));
    } catch (err) {
      // Another KEK can still make the DEK; a non-transient failure is the caller's to hear.
      if (!transient(err) || options.keks.length === 1) throw err;
      failures.set(kek, err);
    }
    break;
  }
  dek ??= randomFillSync(scope.alloc());
  const commit = commitTag(dek, keyId, version).toString('base64');
  const made = dek;
  const check = options.keks.length > 1;
  await Promise.all(
    options.keks
      .filter((kek) => !wraps.has(kek) && !failures.has(kek))
      .map(async (kek) => {
        try {
          const wrapped = await adapters.use(kek, (w) => w.wrap(made, ctx));
          if (check && !(await options.verify(kek, wrapped, commit))) {
            throw new GatewayError('INTERNAL', `the KEK's wrap failed its commitment check`);
          }
          wraps.set(kek, toWrap(kek, wrapped));
        } catch (err) {
          failures.set(kek, err);
        }
      }),
  );
  const needed = Math.min(options.minWraps, options.keks.length);
  if (wraps.size < needed) {
    const errors = options.keks.flatMap((k) => (failures.has(k) ? [failures.get(k)] : []));
    if (options.keks.length === 1) throw errors[0];
    const why = combine(errors.map((e) => (e instanceof GatewayError ? e : new GatewayError('INTERNAL', 'KEK adapter failed'))));
    throw new GatewayError(
      why.code,
      `only ${wraps.size} of ${options.keks.length} KEKs wrapped the new DEK (${needed} needed): ${why.message}`,
    );
  }
  const pending = options.keks.filter((k) => !wraps.has(k));
  const record: VersionRecord = {
    version,
    wraps: options.keks.flatMap((k) => wraps.get(k) ?? []),
    ...(pending.length > 0 ? { pending } : {}),
    commit,
    created: options.created,
    state: 'enabled',
  };
  return { record, dek };
}

/** One KEK of a version as INFO shows it. */
export interface KekInfo {
  readonly kek: string;
  readonly kekVersion?: string;
  /** The wrap does not exist yet (`keys.minWraps`): retried in the background. */
  readonly pending?: true;
  /** This gateway's last unwrap of this version under this KEK; null: none since start. */
  readonly lastUnwrap: LastUnwrap | null;
  /** What this gateway last learned of the KEK from its KMS (any key). */
  readonly kekState: string;
}

/** What INFO shows of a key: metadata only, never a wrapped or unwrapped key. */
export interface KeyInfo {
  readonly id: string;
  readonly created: string;
  readonly state: 'enabled' | 'destroyed';
  readonly primary: number | null;
  readonly versions: ReadonlyArray<{
    readonly version: number;
    readonly keks: readonly KekInfo[];
    readonly created: string;
    readonly state: VersionRecord['state'];
    readonly destroyed?: string;
    /** An upper bound: ENC calls are reserved a block at a time. */
    readonly encryptionsReserved?: number;
    /** The age recipients the DEK is sealed to (break glass); null: no recovery copy. */
    readonly recovery: { readonly recipients: readonly string[] } | null;
  }>;
}

/** Where INFO learns what this gateway saw of each KEK. */
export interface KekObservations {
  readonly ledger?: UnwrapLedger;
  readonly health?: KekHealth;
}

export function describeKey(record: KeyRecord, seen: KekObservations = {}): KeyInfo {
  const newest = newestEnabled(record);
  const kekInfo = (v: VersionRecord, kek: string, kekVersion: string | undefined, pending: boolean): KekInfo => ({
    kek,
    ...(kekVersion === undefined ? {} : { kekVersion }),
    ...(pending ? { pending: true as const } : {}),
    lastUnwrap: seen.ledger?.get(record.id, v.version, kek) ?? null,
    kekState: seen.health?.status(kek).state ?? 'unknown',
  });
  return {
    id: record.id,
    created: record.created,
    state: newest ? 'enabled' : 'destroyed',
    primary: newest?.version ?? null,
    versions: record.versions.map((v) => ({
      version: v.version,
      keks: [
        ...v.wraps.map((w) => kekInfo(v, w.kek, w.kekVersion, false)),
        ...(v.pending ?? []).map((kek) => kekInfo(v, kek, undefined, true)),
      ],
      created: v.created,
      state: v.state,
      ...(v.destroyed === undefined ? {} : { destroyed: v.destroyed }),
      ...(v.encryptions === undefined ? {} : { encryptionsReserved: v.encryptions }),
      recovery: v.recovery === undefined ? null : { recipients: v.recovery.recipients },
    })),
  };
}

/** The KEKs a version is meant to be wrapped under: its wraps, then those still pending. */
export function keksOf(v: VersionRecord): string[] {
  return [...v.wraps.map((w) => w.kek), ...(v.pending ?? [])];
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

/** A version after DESTROY: its wrapped DEKs, recovery copy, commitment tag and KV value gone for good. */
export function destroyedVersion(v: VersionRecord): VersionRecord {
  const { pending: _pending, recovery: _recovery, value: _value, ...rest } = v;
  return { ...rest, wraps: [], commit: null, state: 'destroyed', destroyed: new Date().toISOString() };
}

/**
 * The versions a KEK change applies to: the one `version` names, every enabled one (`all`),
 * else the newest enabled one.
 */
export function targetVersions(record: KeyRecord, version: number | undefined, all: boolean): VersionRecord[] {
  if (version !== undefined) {
    const found = findVersion(record, version);
    if (found?.state !== 'enabled') throw new GatewayError('NOT_FOUND', 'no such key version');
    return [found];
  }
  if (all) return record.versions.filter((v) => v.state === 'enabled');
  const newest = newestEnabled(record);
  if (newest === undefined) throw new GatewayError('NOT_FOUND', 'key has no usable version');
  return [newest];
}
