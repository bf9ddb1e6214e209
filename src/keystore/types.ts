import { z } from 'zod';

/** `enabled` versions unwrap; `destroyed` ones have lost their wrapped DEK for good. */
export const VERSION_STATES = ['enabled', 'destroyed'] as const;
export type VersionState = (typeof VERSION_STATES)[number];

/** The record format this gateway writes; format-1 records are read and upgraded on their next write. */
export const RECORD_FORMAT = 2 as const;

const b64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');
const kekUri = z.string().min(1);

/** An age X25519 recipient (`age1…`, Bech32): the public half of an offline recovery identity. */
export const AgeRecipientSchema = z.string().regex(/^age1[02-9ac-hj-np-z]{58}$/, 'must be an age X25519 recipient (age1…)');

/** One wrapped copy of a version's DEK, under one KEK. */
export const WrapSchema = z
  .object({
    kek: kekUri,
    /** Provider's KEK version that wrapped the blob, when the provider tells. */
    kekVersion: z.string().optional(),
    /** The wrapped DEK, base64, as the adapter returned it. */
    wrapped: b64.min(1),
  })
  .strict();
export type Wrap = z.infer<typeof WrapSchema>;

/** The DEK sealed to offline age recipients (break glass): a standard armored age file. */
export const RecoverySchema = z
  .object({
    recipients: z.array(AgeRecipientSchema).min(1),
    /** `-----BEGIN AGE ENCRYPTED FILE-----` … : `age -d -i identity` prints the 32-byte DEK. */
    sealed: z.string().min(1),
  })
  .strict();
export type Recovery = z.infer<typeof RecoverySchema>;

/** One DEK version as stored (format 2): wrapped only, never plaintext. */
export const VersionRecordSchema = z
  .object({
    version: z.number().int().min(1).max(0xffff_ffff),
    /** One copy per KEK, every one wrapping the same DEK; empty once destroyed. */
    wraps: z.array(WrapSchema),
    /** KEKs the version should also be wrapped under but is not yet (`keys.minWraps`); retried in the background. */
    pending: z.array(kekUri).min(1).optional(),
    /** HMAC-SHA256(DEK, "kmsgw/v1 commit <id> <version>"), base64; null once destroyed. */
    commit: b64.nullable(),
    /** The DEK sealed to `keys.recovery`, when configured; gone once destroyed. */
    recovery: RecoverySchema.optional(),
    created: z.string(),
    state: z.enum(VERSION_STATES),
    destroyed: z.string().optional(),
    /** Encryptions reserved for this DEK (an upper bound of ENC calls made with it). */
    encryptions: z.number().int().min(0).optional(),
    /** A KV v2 secret version: its JSON data sealed under this version's DEK (envelope, base64); gone once destroyed. */
    value: b64.min(1).optional(),
  })
  .strict();

export type VersionRecord = z.infer<typeof VersionRecordSchema>;

/** A format-1 version: one KEK, its blob in `wrapped` (null once destroyed). */
const VersionRecordV1Schema = z
  .object({
    version: VersionRecordSchema.shape.version,
    kek: kekUri,
    kekVersion: z.string().optional(),
    wrapped: b64.nullable(),
    commit: b64.nullable(),
    created: z.string(),
    state: z.enum(VERSION_STATES),
    destroyed: z.string().optional(),
    encryptions: z.number().int().min(0).optional(),
  })
  .strict();

/** What makes a record a KV v2 secret (the Vault front door): Vault's metadata, never a value. */
export const KvMetaSchema = z
  .object({
    /** Writes must name the current version (`options.cas`). */
    casRequired: z.boolean(),
    /** Versions kept with their value; older ones are destroyed (crypto-shredded) on write. */
    maxVersions: z.number().int().min(1).max(1000),
    customMetadata: z.record(z.string().max(128), z.string().max(512)),
    updated: z.string(),
    /** Set when the secret was deleted with all its versions; nothing can be read from it since. */
    deleted: z.string().optional(),
  })
  .strict();
export type KvMeta = z.infer<typeof KvMetaSchema>;

const KeyRecordV2Schema = z
  .object({
    format: z.literal(RECORD_FORMAT),
    id: z.string().min(1).max(256),
    created: z.string(),
    versions: z.array(VersionRecordSchema).min(1),
    /** Present for a KV v2 secret: each version's `value` is one secret version. */
    kv: KvMetaSchema.optional(),
  })
  .strict();

const KeyRecordV1Schema = z
  .object({
    format: z.literal(1),
    id: KeyRecordV2Schema.shape.id,
    created: z.string(),
    versions: z.array(VersionRecordV1Schema).min(1),
  })
  .strict()
  .transform((r): z.output<typeof KeyRecordV2Schema> => ({
    format: RECORD_FORMAT,
    id: r.id,
    created: r.created,
    versions: r.versions.map(({ kek, kekVersion, wrapped, ...rest }) => ({
      ...rest,
      // A destroyed format-1 version kept its KEK name only; format 2 keeps no wrap for it.
      wraps: wrapped === null || wrapped === '' ? [] : [{ kek, ...(kekVersion === undefined ? {} : { kekVersion }), wrapped }],
    })),
  }));

/** A stored key record: format 2, or format 1 read as format 2 (it is written back as format 2). */
export const KeyRecordSchema = z.discriminatedUnion('format', [KeyRecordV2Schema, KeyRecordV1Schema]);

export type KeyRecord = z.output<typeof KeyRecordV2Schema>;

/** Where wrapped DEKs live. Reads are synchronous from memory; writes are durable before they resolve. */
export interface KeyStore {
  get(id: string): KeyRecord | undefined;
  /** Ids in sorted order, optionally only those starting with `prefix`. */
  list(prefix?: string): string[];
  /**
   * Replaces the record for `record.id`; resolves once it is durable. Callers
   * issue one put per id at a time (KeyService runs each id's changes on one chain).
   */
  put(record: KeyRecord): Promise<void>;
  close(): Promise<void>;
}

/** The newest version that is not destroyed, if any. */
export function newestEnabled(record: KeyRecord): VersionRecord | undefined {
  for (let i = record.versions.length - 1; i >= 0; i--) {
    const v = record.versions[i] as VersionRecord;
    if (v.state === 'enabled') return v;
  }
  return undefined;
}

export function findVersion(record: KeyRecord, version: number): VersionRecord | undefined {
  return record.versions.find((v) => v.version === version);
}
