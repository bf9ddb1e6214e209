import { isAbsolute } from 'node:path';
import { z } from 'zod';

// Only zod and node:path here: validating the config must not open any file.

/** `kms.adapters.local` in the config: whether KEK files on this host may be used, and where. */
export const LocalSettingsSchema = z
  .object({
    /**
     * Allow `local://` KEKs at all. Off unless enabled, because a KEK file on the gateway's
     * own host defeats a cloud KMS: whoever names one can unwrap without the cloud.
     * @default false (true in the embedded development default)
     */
    enabled: z.boolean().default(false),
    /**
     * The one folder local KEK files may live in (an absolute path); `local://name` is
     * resolved inside it, and a file whose real path (after symlinks) leaves it is refused.
     * @default dataDir
     */
    dir: z.string().refine(isAbsolute, 'must be an absolute path').optional(),
  })
  .strict();

export type LocalSettings = z.output<typeof LocalSettingsSchema>;
