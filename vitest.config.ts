import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    // Google's auth library must never probe a metadata server from tests.
    env: { METADATA_SERVER_DETECTION: 'none' },
    hookTimeout: 60_000,
    // Starts (or reuses) LocalStack KMS on 127.0.0.1:4566 and creates the test KEKs; see localstack/README.md.
    // Vitest 4 puts no timeout on globalSetup itself (a cold install takes ~40 s); install.sh/start.sh have their own.
    // Starts the Cloud KMS emulator (test/emulators/gcp-kms/, ~0.3 s) on a free port; see its README.md.
    // Starts the Key Vault emulator (test/emulators/azure-kv/, HTTPS with a per-run cert, ~0.2 s); see its README.md.
    // Starts fake-gcs-server (test/emulators/fake-gcs/, ~0.1 s; its install.sh runs `go install` once, ~3 min cold).
    // Starts Azurite's blob service (npm `azurite`, in memory, ~1.5 s) on a free port; see test/helpers/azurite.ts.
    globalSetup: [
      'test/setup/localstack.ts',
      'test/setup/gcp-kms.ts',
      'test/setup/azure-kv.ts',
      'test/setup/fake-gcs.ts',
      'test/setup/azurite.ts',
    ],
    // Global teardown stops LocalStack (~1 s, up to 10 s before SIGKILL); vitest exits after teardownTimeout.
    teardownTimeout: 30_000,
    // Server tests bind sockets and spawn the CLI; two cores run two files at once.
    maxWorkers: 2,
  },
});
