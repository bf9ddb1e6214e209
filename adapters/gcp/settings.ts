import { z } from 'zod';

// Only zod here: validating the config must not load the Google client libraries.

/** `kms.adapters.gcp-kms` in the config. */
export const GcpSettingsSchema = z
  .object({
    /**
     * `host:port` of the Cloud KMS API, for private endpoints and emulators.
     * @default Google's endpoint for the universe domain
     */
    endpoint: z
      .string()
      .regex(/^[A-Za-z0-9.-]+:\d{1,5}$/, 'must be host:port')
      .optional(),
    /**
     * TLS to the endpoint; false only for a local emulator.
     * @default true
     */
    tls: z.boolean().default(true),
    /** Extra CA certificate (PEM file) to trust for a private endpoint. */
    caFile: z.string().min(1).optional(),
    /**
     * Named so the client never probes a metadata server to learn it.
     * @default 'googleapis.com'
     */
    universeDomain: z.string().min(1).default('googleapis.com'),
  })
  .strict();

export type GcpSettings = z.output<typeof GcpSettingsSchema>;
