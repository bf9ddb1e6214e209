import { z } from 'zod';

// Only zod here: validating the config must not load the AWS SDK.

/** `kms.adapters.aws-kms` in the config. */
export const AwsSettingsSchema = z
  .object({
    /**
     * Region for KEKs named without an ARN (`aws-kms://alias/x`); ARNs carry their own.
     * @default the SDK's AWS_REGION chain
     */
    region: z.string().min(1).optional(),
    /**
     * Endpoint override (LocalStack, VPC endpoints); AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL work too.
     * @default the SDK's endpoint for the region
     */
    endpoint: z.string().url().optional(),
    /**
     * Endpoint per region (VPC interface endpoints, FIPS endpoints, emulators): a KEK is sent to
     * the endpoint of the region in its ARN (or `region` for an alias without one); a region not
     * listed uses `endpoint`, else the SDK's own.
     * @default none
     */
    endpoints: z
      .record(z.string().regex(/^[a-z]{2}(-[a-z0-9]+)+-\d+$/, 'must be an AWS region such as eu-west-1'), z.string().url())
      .optional(),
    /**
     * SDK attempts per gateway attempt. The gateway retries outages and throttling itself
     * (`kms.retry`, inside `kms.timeoutMs`, counted by the breaker), so the SDK's own retries
     * would only multiply them; raise it only for a reason.
     * @default 1
     */
    maxAttempts: z.number().int().min(1).max(10).default(1),
  })
  .strict();

export type AwsSettings = z.output<typeof AwsSettingsSchema>;
