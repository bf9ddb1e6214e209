// Vitest globalSetup: starts one shared Azure Key Vault emulator (test/emulators/azure-kv/server.mjs) over HTTPS
// on a free port of 127.0.0.1 for the whole run, with a fresh self-signed certificate and its state in a temp dir,
// and provides `inject('azureKv')` = { vaultUrl: 'https://localhost:<port>', caCertPath }. Teardown stops it and
// removes the temp dir. If it cannot start, setup throws "Key Vault emulator did not start ..." with the
// emulator's stderr and the run fails; nothing is skipped.
//
// Tests that need faults (setFaults) or stop/start should start their own emulator with
// test/helpers/azure-kv.ts instead: this one is shared by all test files running in parallel.
import type { TestProject } from 'vitest/node';
import { startAzureKvEmulator, type AzureKvEndpoint } from '../helpers/azure-kv.js';
import { startOrExplain } from '../helpers/emulator-process.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /**
     * The shared Key Vault emulator. Build clients with keyClient()/cryptoClient()/testClientOptions() from
     * test/helpers/azure-kv.ts (they trust caCertPath per client).
     */
    azureKv: AzureKvEndpoint;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const emu = await startOrExplain('Key Vault emulator', () => startAzureKvEmulator());
  console.log(`[azure-kv] emulator listening on ${emu.vaultUrl}`);
  project.provide('azureKv', { vaultUrl: emu.vaultUrl, caCertPath: emu.caCertPath });
  return () => emu.dispose();
}
