import { z } from 'zod';

// Only zod here: validating the config must not load the Azure SDK.

/** Wrap algorithms the adapter allows: RSA-OAEP-256 for vault keys, A256KW for Managed HSM keys. */
export const WRAP_ALGORITHMS = ['RSA-OAEP-256', 'RSA-OAEP', 'A256KW'] as const;

/** `kms.adapters.azure-kv` in the config. */
export const AzureSettingsSchema = z
  .object({
    /**
     * Key wrap algorithm (the key's type must support it).
     * @default 'RSA-OAEP-256'
     */
    algorithm: z.enum(WRAP_ALGORITHMS).default('RSA-OAEP-256'),
    /** Extra CA certificate (PEM) to trust for this vault (private endpoints, test vaults); never disables verification. */
    caFile: z.string().min(1).optional(),
  })
  .strict();

export type AzureSettings = z.output<typeof AzureSettingsSchema>;
