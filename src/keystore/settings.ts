import { z } from 'zod';
import { parseStoreUrl } from './url.js';

// Only zod and URL parsing: validating the config loads no storage SDK.

/** `keystore` in the config: where wrapped DEKs live and how this gateway keeps up with them. */
export const KeyStoreSettingsSchema = z
  .object({
    /**
     * `file://<dir>`, `s3://<bucket>/<prefix>`, `gs://<bucket>/<prefix>` or
     * `azblob://<account>/<container>/<prefix>` (env `KMSGW_KEYSTORE_URL`).
     * @default `file://<dataDir>/keys`
     */
    url: z
      .string()
      .optional()
      .superRefine((url, ctx) => {
        if (url === undefined) return;
        try {
          parseStoreUrl(url);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: (err as Error).message });
        }
      }),
    /**
     * The object store's endpoint, for emulators and S3-compatible stores. S3 also reads the
     * SDK's `AWS_ENDPOINT_URL_S3`.
     */
    endpoint: z.url().optional(),
    /** S3 path-style addressing (`endpoint/bucket/key`), which emulators and MinIO need. @default false */
    forcePathStyle: z.boolean().default(false),
    /** S3 region. @default the SDK's (AWS_REGION, profile), else us-east-1 */
    region: z.string().min(1).optional(),
    /**
     * How often changes made by other gateways (new versions, DESTROY) are picked up, in ms;
     * 0 turns the background refresh off. Unknown ids and versions are always looked up at once.
     * @default 30000
     */
    refreshMs: z.number().int().min(0).max(3_600_000).default(30_000),
    /** Longest wait for one store call before the request gets `STORE_UNAVAILABLE`. @default 5000 */
    timeoutMs: z.number().int().min(100).max(120_000).default(5_000),
    /** Most key records held in memory; the least recently used are read again when needed. @default 10000 */
    cacheRecords: z.number().int().min(1).max(10_000_000).default(10_000),
  })
  .strict();

export type KeyStoreSettings = z.output<typeof KeyStoreSettingsSchema>;
