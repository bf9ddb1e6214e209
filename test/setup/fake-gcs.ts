// Vitest globalSetup: runs test/emulators/fake-gcs/install.sh (idempotent; builds fake-gcs-server into
// <repo>/.cache/bin with `go install` on first use), starts one shared fake-gcs-server (plain HTTP, memory backend)
// on a free port of 127.0.0.1 for the whole run, and provides `inject('fakeGcs')` = { endpoint }. Teardown stops
// it. If it cannot be installed or started, setup throws "fake-gcs-server did not start: ..." with its output and
// the run fails; nothing is skipped.
//
// Test files share this instance: each makes its own buckets. Tests that stop/start the emulator (outages) start
// their own with startFakeGcs() from test/helpers/fake-gcs.ts.
import type { TestProject } from 'vitest/node';
import { startOrExplain } from '../helpers/emulator-process.js';
import { ensureFakeGcsInstalled, startFakeGcs, type FakeGcsEndpoint } from '../helpers/fake-gcs.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The shared Cloud Storage emulator. Build clients with fakeGcsClient() from test/helpers/fake-gcs.ts. */
    fakeGcs: FakeGcsEndpoint;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const t0 = performance.now();
  const emu = await startOrExplain('fake-gcs-server', async () => {
    await ensureFakeGcsInstalled();
    return startFakeGcs();
  });
  console.log(`[fake-gcs] fake-gcs-server listening on ${emu.endpoint} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  project.provide('fakeGcs', { endpoint: emu.endpoint });
  return () => emu.stop();
}
