/**
 * Resource limits of a real gateway under hostile clients, each with the server's memory
 * measured (RSS of this process, which hosts the gateway; flooding clients run in child
 * processes so their buffers do not count) and `listener.stats()` peaks, reported on one
 * `[limits] ...` line per test.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.js';
import { fakeKms } from '../helpers/fake-adapter.js';
import { rawConnect, startTestGateway, type RawConn, type TestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { MiB, kib, mib, rssText, sample, sleep, startFlood, within, type Flood } from './load.js';

const tmp = useTmpDirs();
const running = useRunningGateways();
const floods: Flood[] = [];
const conns: RawConn[] = [];

// After-hooks run last-registered first (vitest's default sequence.hooks 'stack'): connections and
// floods end before useRunningGateways() resets the fake KMS and closes the gateways.
afterEach(async () => {
  for (const c of conns.splice(0)) c.close();
  await Promise.all(floods.splice(0).map((f) => f.stop()));
});

const LIMITS = { maxLineBytes: 1024 * 1024, maxConnections: 1024, maxInFlight: 1024, idleTimeoutMs: 300_000, requestTimeoutMs: 30_000 };

async function gateway(limits: Partial<typeof LIMITS>, more: ConfigInput = {}): Promise<TestGateway> {
  const gw = await startTestGateway(await tmp(), { limits: { ...LIMITS, ...limits }, ...more });
  running.push(gw);
  return gw;
}

async function connect(gw: TestGateway): Promise<RawConn> {
  const c = await rawConnect(gw.socketPath as string);
  conns.push(c);
  return c;
}

describe('resource limits', () => {
  it('connection cap: extra connections get ERR THROTTLED and are closed; the others keep working; a freed slot is reusable', async () => {
    const gw = await gateway({ maxConnections: 4 });
    const s = sample(gw.listener);
    const inside = await Promise.all([0, 1, 2, 3].map(() => connect(gw)));
    for (const c of inside) expect(await c.ask('PING')).toBe('OK PONG');

    // 200 more at once: each is told why, then closed.
    const EXTRA = 200;
    const extras = await Promise.all(Array.from({ length: EXTRA }, () => connect(gw)));
    const refusals = await Promise.all(
      extras.map(async (c) => {
        const [line] = await c.lines(1, 5000);
        await within(c.closed(), 2000, 'refused connection closed');
        return line;
      }),
    );
    expect(new Set(refusals)).toEqual(new Set(['ERR THROTTLED too many connections; try again later']));
    for (const c of inside) expect(await c.ask('PING')).toBe('OK PONG');
    expect(gw.listener.stats().connections).toBe(4);

    // Closing one frees its slot.
    (inside[0] as RawConn).close();
    const freed = performance.now();
    while (gw.listener.stats().connections > 3) {
      if (performance.now() - freed > 2000) throw new Error('slot not freed within 2 s');
      await sleep(5);
    }
    const again = await connect(gw);
    expect(await again.ask('PING')).toBe('OK PONG');
    const p = s.stop();
    const stats = gw.listener.stats();
    console.log(
      `[limits] connection cap: maxConnections=4, ${EXTRA} extra connections all got "${refusals[0]}" and were closed; ` +
        `the 4 inside kept answering; peak open ${p.connections}; bytesRead peak ${p.bytesRead} B, bytesQueued peak ${p.bytesQueued} B; ` +
        `now ${stats.connections} open; ${rssText(p)}`,
    );
    expect(p.connections).toBeLessThanOrEqual(4);
  });

  it('maxInFlight: with the KEK hanging, the server stops reading a pipelining client; bytesRead stays bounded while it keeps writing', async () => {
    const MAX_IN_FLIGHT = 16;
    const KMS_TIMEOUT = 1000;
    const gw = await gateway({ maxInFlight: MAX_IN_FLIGHT }, { kms: { timeoutMs: KMS_TIMEOUT } });
    const admin = await connect(gw);
    expect(await admin.ask('CREATE h fake://kek')).toBe('OK 1');
    gw.cache.clear();
    fakeKms.mode = 'hang';

    const s = sample(gw.listener);
    const started = Date.now();
    const OFFERED = 20 * MiB;
    const flood = startFlood(gw.socketPath as string, 'GET h', OFFERED, true);
    floods.push(flood);
    await flood.until((r) => r.offered >= OFFERED, 5000);
    const writing = Date.now();
    // The client keeps writing (its writes are queued; the kernel takes what the server lets through).
    await sleep(400);
    const during = { ...s.peaks };
    const watched = Date.now() - writing;
    const flushed = flood.last().flushed;
    expect(flood.last().lines).toBe(0);
    // Bounded: one read chunk (64 KiB) plus socket buffers, never the 20 MiB offered.
    expect(during.bytesRead).toBeLessThan(1 * MiB);
    // Admin connections are served meanwhile.
    expect(await admin.ask('PING')).toBe('OK PONG');

    // When the KMS deadline passes, every pending request is answered at once: that burst is what was in flight.
    const first = await flood.until((r) => r.lines > 0, KMS_TIMEOUT + 2000);
    await sleep(200);
    const inFlight = flood.last().lines;
    const p = s.stop();
    console.log(
      `[limits] maxInFlight=${MAX_IN_FLIGHT} (KEK hanging, kms.timeoutMs=${KMS_TIMEOUT}): client offered ${mib(OFFERED)} MiB of "GET h", ` +
        `kernel took ${kib(flushed)} KiB; server bytesRead ${kib(during.bytesRead)} KiB (peak over ${watched} ms of writing); ` +
        `requests in flight when reading stopped: ${inFlight} (all answered at the KMS deadline, ${first.firstReplyAt - started} ms after the client started); ` +
        `heap used +${mib(during.heapMax - during.heapBefore)} MiB and rss +${mib(during.rssMax - during.rssBefore)} MiB while they waited; ` +
        `bytesQueued peak ${kib(p.bytesQueued)} KiB; whole test ${rssText(p)}`,
    );
    // Reading stops at maxInFlight, but the chunk being parsed is finished first: at most one read's worth of lines.
    expect(inFlight).toBeGreaterThanOrEqual(MAX_IN_FLIGHT);
    expect(inFlight).toBeLessThanOrEqual(MAX_IN_FLIGHT + Math.ceil((64 * 1024) / 'GET h\n'.length));
  });

  // Lines beyond maxInFlight are deferred, not run: at most one read's worth waits, unexecuted.
  it('maxInFlight bounds the requests in flight, not only when reading pauses (200 pipelined in one write, maxInFlight 16)', async () => {
    const gw = await gateway({ maxInFlight: 16 }, { kms: { timeoutMs: 300 } });
    const c = await connect(gw);
    expect(await c.ask('CREATE h fake://kek')).toBe('OK 1');
    gw.cache.clear();
    fakeKms.mode = 'hang';
    const arrivals: number[] = [];
    c.socket.on('data', (chunk: string) => {
      for (const ch of chunk) if (ch === '\n') arrivals.push(performance.now());
    });
    c.write('GET h\n'.repeat(200));
    await within(
      (async () => {
        while (arrivals.length === 0) await sleep(10);
      })(),
      3000,
      'first replies',
    );
    await sleep(150);
    const first = arrivals[0] as number;
    const burst = arrivals.filter((t) => t - first < 150).length;
    expect(burst).toBeLessThanOrEqual(16);
  });

  it('idle timeout closes a silent connection; a chatty one stays open', async () => {
    const IDLE = 300;
    const gw = await gateway({ idleTimeoutMs: IDLE, requestTimeoutMs: 0 });
    const s = sample(gw.listener);
    const silent = await connect(gw);
    const chatty = await connect(gw);
    expect(await silent.ask('PING')).toBe('OK PONG');
    const since = performance.now();
    let chats = 0;
    const chatting = (async () => {
      while (performance.now() - since < 3 * IDLE) {
        expect(await chatty.ask('PING')).toBe('OK PONG');
        chats++;
        await sleep(IDLE / 3);
      }
    })();
    await within(silent.closed(), 10 * IDLE, 'silent connection closed');
    const elapsed = performance.now() - since;
    await chatting;
    expect(chatty.socket.destroyed).toBe(false);
    expect(await chatty.ask('PING')).toBe('OK PONG');
    const p = s.stop();
    console.log(
      `[limits] idle timeout: idleTimeoutMs=${IDLE}, silent connection closed ${elapsed.toFixed(0)} ms after its last reply; ` +
        `a connection pinging every ${IDLE / 3} ms stayed open for ${(performance.now() - since).toFixed(0)} ms (${chats} pings); ` +
        `bytesRead peak ${p.bytesRead} B, bytesQueued peak ${p.bytesQueued} B; ${rssText(p)}`,
    );
    expect(elapsed).toBeGreaterThanOrEqual(IDLE - 50);
    expect(elapsed).toBeLessThan(IDLE + 1000);
  });

  it('slow sender: a partial line dribbled a byte at a time is closed after requestTimeoutMs, though never idle', async () => {
    const REQUEST_TIMEOUT = 300;
    const gw = await gateway({ requestTimeoutMs: REQUEST_TIMEOUT, idleTimeoutMs: 10_000, maxLineBytes: 1024 });
    const s = sample(gw.listener);

    /** Sends `prefix`, then one byte every 25 ms until the server closes; returns ms and bytes until then. */
    const dribble = async (prefix: string | Buffer) => {
      const c = await connect(gw);
      c.write(prefix);
      const started = performance.now();
      let sent = 0;
      const closed = c.closed();
      let done = false;
      void closed.then(() => (done = true));
      while (!done && performance.now() - started < 10 * REQUEST_TIMEOUT) {
        await sleep(25);
        if (!done) {
          c.write('a');
          sent++;
        }
      }
      await within(closed, 1000, 'slow sender closed');
      return { ms: performance.now() - started, sent };
    };
    const partial = await dribble('GET ');
    // A line already past maxLineBytes (being discarded) is held to the same deadline.
    const discarding = await dribble(`GET ${'x'.repeat(2000)}`);
    // A good client on another connection is unaffected.
    const good = await connect(gw);
    expect(await good.ask('PING')).toBe('OK PONG');
    const p = s.stop();
    console.log(
      `[limits] slow sender: requestTimeoutMs=${REQUEST_TIMEOUT} (idleTimeoutMs 10000): a partial line dribbled 1 byte/25 ms was closed after ` +
        `${partial.ms.toFixed(0)} ms (${partial.sent} bytes); an oversize line being discarded, after ${discarding.ms.toFixed(0)} ms ` +
        `(${discarding.sent} bytes); bytesRead peak ${p.bytesRead} B, bytesQueued peak ${p.bytesQueued} B; ${rssText(p)}`,
    );
    for (const r of [partial, discarding]) {
      expect(r.ms).toBeGreaterThanOrEqual(REQUEST_TIMEOUT - 30);
      expect(r.ms).toBeLessThan(REQUEST_TIMEOUT + 1000);
    }
  });

  // The slow-sender clock restarts with every completed line.
  it('slow sender: a client completing every line within requestTimeoutMs is not closed, even when reads end mid-line', async () => {
    const REQUEST_TIMEOUT = 300;
    const gw = await gateway({ requestTimeoutMs: REQUEST_TIMEOUT, idleTimeoutMs: 10_000 });
    const c = await connect(gw);
    c.write('PI');
    const started = performance.now();
    let lines = 0;
    while (performance.now() - started < 4 * REQUEST_TIMEOUT && !c.socket.destroyed) {
      await sleep(25);
      c.write('NG\nPI');
      lines++;
    }
    expect(c.socket.destroyed, `closed after ${(performance.now() - started).toFixed(0)} ms`).toBe(false);
    c.write('NG\n');
    expect(await c.lines(lines + 1, 2000)).toEqual(Array.from({ length: lines + 1 }, () => 'OK PONG'));
  });

  it('a client that never reads: replies and reads stay bounded while 64 MiB of requests are offered', async () => {
    const gw = await gateway({});
    const admin = await connect(gw);
    const dek = await admin.ask('GET k');
    expect(dek).toMatch(/^OK /);

    const s = sample(gw.listener);
    const OFFERED = 64 * MiB;
    // "GET k" is 6 bytes in, 49 bytes out (8x): a server that buffered replies would hold ~500 MiB.
    const flood = startFlood(gw.socketPath as string, 'GET k', OFFERED, false);
    floods.push(flood);
    await flood.until((r) => r.offered >= OFFERED, 10_000);
    await sleep(1000);
    // The gateway still serves everyone else.
    const pingMs = await within(admin.ask('PING'), 2000, 'PING during the flood');
    expect(await admin.ask('GET k')).toBe(dek);
    const r = flood.last();
    const p = s.stop();
    console.log(
      `[limits] never-reading client: offered ${mib(OFFERED)} MiB of "GET k" (49-byte replies), kernel took ${kib(r.flushed)} KiB; ` +
        `server bytesRead peak ${kib(p.bytesRead)} KiB, bytesQueued peak ${kib(p.bytesQueued)} KiB; PING on another connection ${pingMs.toFixed(1)} ms; ` +
        `${rssText(p)}`,
    );
    expect(r.closed).toBe(false);
    expect(p.bytesRead).toBeLessThan(4 * MiB);
    expect(p.bytesQueued).toBeLessThan(4 * MiB);
    expect(p.rssMax - p.rssBefore).toBeLessThan(64 * MiB);
  });
});
