import { describe, expect, it } from 'vitest';
import { startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

describe('Vault front door at start', () => {
  it('a port in use stops the start with the error, releasing what was already started (socket, store lock)', async () => {
    const first = await startTestGateway(await tmp(), { vault: { listen: '127.0.0.1:0', insecure: true } });
    running.push(first);
    const dir = await tmp();
    const taken = { vault: { listen: `127.0.0.1:${first.vault?.port as number}`, insecure: true } };
    await expect(startTestGateway(dir, taken)).rejects.toThrow(/EADDRINUSE/);
    // The same dataDir starts at once: the key store's lock and the socket were released.
    const again = await startTestGateway(dir, { vault: { listen: '127.0.0.1:0', insecure: true } });
    running.push(again);
    expect(again.vault?.port).toBeGreaterThan(0);
  });
});
