// Vitest globalSetup: starts one shared Cloud KMS emulator (test/emulators/gcp-kms/server.mjs) on a free port of
// 127.0.0.1 for the whole run, with its state in a temp dir, and provides its address as `inject('gcpKms')`.
// Teardown stops it and removes the state. If it cannot start, setup throws "Cloud KMS emulator did not start ..."
// with the emulator's stderr and the run fails; nothing is skipped.
//
// Tests that need faults (setFaults) or stop/start should start their own emulator with
// test/helpers/gcp-kms.ts instead: this one is shared by all test files running in parallel.
import type { TestProject } from 'vitest/node';
import { startOrExplain } from '../helpers/emulator-process.js';
import { startGcpKmsEmulator, type GcpKmsEndpoint } from '../helpers/gcp-kms.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The shared Cloud KMS emulator: plaintext gRPC on host:port. Use adminClient() from test/helpers/gcp-kms.ts. */
    gcpKms: GcpKmsEndpoint;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const emu = await startOrExplain('Cloud KMS emulator', () => startGcpKmsEmulator());
  console.log(`[gcp-kms] emulator listening on 127.0.0.1:${emu.endpoint.port}`);
  project.provide('gcpKms', { host: emu.endpoint.host, port: emu.endpoint.port });
  return () => emu.dispose();
}
