// Vitest globalSetup: starts one shared Azurite blob service (npm package `azurite`, `azurite-blob` only) on a free
// port of 127.0.0.1 for the whole run, in memory, and provides `inject('azurite')` = { endpoint, account, key }.
// Teardown stops it. If it cannot start, setup throws "Azurite did not start: ..." with its output and the run
// fails; nothing is skipped.
//
// Tests that stop and start the store (outages) start their own with startAzurite() from test/helpers/azurite.ts:
// this one is shared by all test files running in parallel. Each test file makes its own container.
import type { TestProject } from 'vitest/node';
import { startAzurite, type AzuriteEndpoint } from '../helpers/azurite.js';
import { startOrExplain } from '../helpers/emulator-process.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The shared Azurite blob service. Build clients with azuriteServiceClient() from test/helpers/azurite.ts. */
    azurite: AzuriteEndpoint;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const emu = await startOrExplain('Azurite', () => startAzurite());
  console.log(`[azurite] blob service listening on ${emu.endpoint}`);
  project.provide('azurite', { endpoint: emu.endpoint, account: emu.account, key: emu.key });
  return () => emu.dispose();
}
