import { z } from 'zod';

/** `enabled` versions unwrap; `destroyed` ones have lost their wrapped DEK for good. */
export const VERSION_STATES = ['enabled', 'destroyed'] as const;
export type VersionState = (typeof VERSION_STATES)[number];

const b64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');

/** One DEK version as stored: wrapped only, never plaintext. */
export const VersionRecordSchema = z
  .object({
    version: z.number().int().min(1).max(0xffff_ffff),
    kek: z.string().min(1),
    /** Provider's KEK version that wrapped the blob, when the provider tells. */
    kekVersion: z.string().optional(),
    /** The wrapped DEK, base64, as the adapter returned it; null once destroyed. */
    wrapped: b64.nullable(),
    /** HMAC-SHA256(DEK, "kmsgw/v1 commit <id> <version>"), base64; null once destroyed. */
    commit: b64.nullable(),
    created: z.string(),
    state: z.enum(VERSION_STATES),
    destroyed: z.string().optional(),
    /** Encryptions reserved for this DEK (an upper bound of ENC calls made with it). */
    encryptions: z.number().int().min(0).optional(),
  })
  .strict();

export type VersionRecord = z.infer<typeof VersionRecordSchema>;

export const KeyRecordSchema = z
  .object({
    format: z.literal(1),
    id: z.string().min(1).max(256),
    created: z.string(),
    versions: z.array(VersionRecordSchema).min(1),
  })
  .strict();

export type KeyRecord = z.infer<typeof KeyRecordSchema>;

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
