import { z } from 'zod';
import { AwsSettingsSchema } from './aws/settings.js';
import { AzureSettingsSchema } from './azure/settings.js';
import { GcpSettingsSchema } from './gcp/settings.js';
import { LocalSettingsSchema } from './local/settings.js';

// Only zod and the per-cloud schemas: validating the config loads no cloud SDK.

/**
 * `kms.adapters` in the config, keyed by KEK URI scheme. Validated once at
 * start-up; adapters receive the parsed result. Defaults live in the inner
 * fields only (`prefault({})` parses a missing section as an empty one).
 */
export const AdapterSettingsSchema = z
  .object({
    /** KEK files on this host (`local://`), off unless enabled. */
    local: LocalSettingsSchema.prefault({}),
    /** AWS KMS (`aws-kms://`). */
    'aws-kms': AwsSettingsSchema.prefault({}),
    /** Google Cloud KMS (`gcp-kms://`). */
    'gcp-kms': GcpSettingsSchema.prefault({}),
    /** Azure Key Vault and Managed HSM (`azure-kv://`). */
    'azure-kv': AzureSettingsSchema.prefault({}),
  })
  .strict();

export type AdapterSettings = z.output<typeof AdapterSettingsSchema>;
export type AdapterSettingsInput = z.input<typeof AdapterSettingsSchema>;

/** Every default, for adapters built without settings (tests, embedding). */
export const DEFAULT_ADAPTER_SETTINGS: AdapterSettings = AdapterSettingsSchema.parse({});
