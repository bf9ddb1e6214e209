import { connect } from 'node:net';
import { describe, expect, it } from 'vitest';
import { rawConnect, startTestGateway, useRunningGateways, type RawConn } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();
const KiB = 1024;

/** Waits (a turn of the event loop at a time, 10 s at most) until the gateway's listener shows `done`. */
async function until(done: () => boolean): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (!done()) {
    if (performance.now() > deadline) throw new Error('condition not reached within 10 s');
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function gateway(limits: Record<string, number>, tcp = false) {
  const gw = await startTestGateway(await tmp(), { limits, ...(tcp ? { listen: { tcp: { port: 0, insecure: true } } } : {}) });
  running.push(gw);
  return gw;
}

describe('limits one client cannot use up for everyone', () => {
  it('caps connections per peer: the third from this uid is refused while another peer still gets in', async () => {
    const gw = await gateway({ maxConnectionsPerPeer: 2 }, true);
    const path = gw.socketPath as string;
    const held = [await rawConnect(path), await rawConnect(path)];
    for (const c of held) expect(await c.ask('PING')).toBe('OK PONG');
    const third = await rawConnect(path);
    expect(await third.lines(1)).toEqual(['ERR THROTTLED too many connections from this client; try again later']);
    await third.closed();
    // A TCP client is another peer (its address), so it is not held up by this uid's connections.
    const tcp = connect({ host: '127.0.0.1', port: gw.listener.tcpPort as number });
    const pong = await new Promise<string>((resolve) => {
      tcp.once('data', (d) => resolve(d.toString()));
      tcp.write('PING\n');
    });
    expect(pong).toBe('OK PONG\n');
    tcp.destroy();
    held[0]?.close();
    await until(() => gw.listener.stats().connections === 1);
    const again = await rawConnect(path);
    expect(await again.ask('PING')).toBe('OK PONG');
    for (const c of [...held, again]) c.close();
  });

  it('caps unfinished request lines across connections: the connection that passes the cap is cut, the others go on', async () => {
    const gw = await gateway({ maxBufferedBytes: 1024 * KiB, maxLineBytes: 1024 * KiB });
    const path = gw.socketPath as string;
    const first = await rawConnect(path);
    first.write(`GET ${'a'.repeat(600 * KiB)}`);
    expect(await first.ask('')).toMatch(/^ERR BAD_REQUEST /); // the line completes: the gateway had held it
    const partial = `GET ${'b'.repeat(600 * KiB)}`;
    first.write(partial);
    const sent = 2 * (partial.length + 1) - 1;
    await until(() => gw.listener.stats().bytesRead >= sent); // the gateway holds first's unfinished line
    const second = await rawConnect(path);
    second.write(`GET ${'c'.repeat(600 * KiB)}`);
    await second.closed();
    // The first connection keeps its line and gets its answer; the cut one's bytes were released.
    expect(await first.ask('')).toMatch(/^ERR BAD_REQUEST /);
    const third: RawConn = await rawConnect(path);
    third.write(`GET ${'d'.repeat(900 * KiB)}`);
    expect(await third.ask('')).toMatch(/^ERR BAD_REQUEST /);
    first.close();
    third.close();
  });

  it('logs a refused connection once per interval, not once per attempt', async () => {
    const gw = await gateway({ maxConnections: 1 });
    const path = gw.socketPath as string;
    const held = await rawConnect(path);
    expect(await held.ask('PING')).toBe('OK PONG');
    for (let i = 0; i < 20; i++) {
      const refused = await rawConnect(path);
      expect(await refused.lines(1)).toEqual(['ERR THROTTLED too many connections; try again later']);
      await refused.closed();
    }
    expect(gw.logLines.filter((l) => l.includes('connection refused'))).toHaveLength(1);
    held.close();
  });
});
