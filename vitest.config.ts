import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Server tests bind sockets and spawn the CLI; two cores run two files at once.
    maxWorkers: 2,
  },
});
