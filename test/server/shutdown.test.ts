import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fileNameFor } from '../../src/keystore/file/index.js';
import type { KeyRecord } from '../../src/keystore/types.js';
import type { RequestRecord } from '../../src/request/context.js';
import { b64, rawConnect, startTestGateway, useRunningGateways, type RawConn, type TestGateway } from '../helpers/gateway.js';
import { fakeKms } from '../helpers/fake-adapter.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

/** Every reply line until the gateway ends the connection. */
async function repliesUntilClosed(c: RawConn): Promise<string[]> {
  const got: string[] = [];
  for (;;) {
    try {
      got.push(...(await c.lines(1, 20_000)));
    } catch {
      return got;
    }
  }
}

async function auditRecords(gw: TestGateway): Promise<RequestRecord[]> {
  const text = await readFile(join(gw.dir, 'audit.log'), 'utf8');
  return text
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as RequestRecord)
    .filter((r) => r.verb !== '-' && r.client !== 'kmsgw');
}

async function versionsOf(gw: TestGateway, id: string): Promise<number> {
  const record = JSON.parse(await readFile(join(gw.dir, 'data', 'keys', fileNameFor(id)), 'utf8')) as KeyRecord;
  return record.versions.length;
}

describe('graceful shutdown (SIGTERM)', () => {
  it('answers every request it had read, ROTATEs included, before closing', async () => {
    const gw = await startTestGateway(await tmp(), { audit: { file: 'audit.log', fsync: 'never' } });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE sd/k');
    const lines = Array.from({ length: 1000 }, (_, i) => (i % 16 === 0 ? 'ROTATE sd/k' : 'GET sd/k'));
    c.write(`${lines.join('\n')}\n`);
    await c.lines(1); // replies have started
    const closing = gw.close();
    const replies = await repliesUntilClosed(c);
    await closing;
    expect(replies).toHaveLength(lines.length - 1);
    replies.forEach((reply, i) =>
      expect(reply, lines[i + 1]).toMatch(lines[i + 1] === 'ROTATE sd/k' ? /^OK \d+$/ : /^OK [A-Za-z0-9+/]{43}=$/),
    );
    // Every version made was answered: 1 + the 63 ROTATEs.
    expect(await versionsOf(gw, 'sd/k')).toBe(1 + lines.filter((l) => l === 'ROTATE sd/k').length);
  });

  it('never executes a line it had not read, and never leaves an executed one unanswered', async () => {
    const gw = await startTestGateway(await tmp(), { audit: { file: 'audit.log', fsync: 'never' }, limits: { maxInFlight: 2 } });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE sd/big');
    // ~87 KiB lines: one socket read holds at most one of them, so most stay unread in the kernel.
    const line = `ENC sd/big ${b64('x'.repeat(64 * 1024))}`;
    const total = 300;
    for (let i = 0; i < total; i++) c.write(`${line}\n`);
    await c.lines(1);
    const closing = gw.close();
    const replies = await repliesUntilClosed(c);
    await closing;
    expect(replies.length + 1).toBeLessThan(total);
    for (const reply of replies) expect(reply).toMatch(/^OK /);
    // The audit log saw exactly the ENCs that were answered: none ran without its reply.
    const encs = (await auditRecords(gw)).filter((r) => r.verb === 'ENC');
    expect(encs).toHaveLength(replies.length + 1);
  });

  it('cuts connections still busy after shutdownGraceMs', async () => {
    const gw = await startTestGateway(await tmp(), { limits: { shutdownGraceMs: 200 }, kms: { timeoutMs: 60_000 } });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE sd/hang fake://a');
    gw.cache.clear();
    fakeKms.mode = 'hang';
    c.write('GET sd/hang\n');
    const started = performance.now();
    await gw.close();
    expect(performance.now() - started).toBeLessThan(5000);
    await c.closed();
  });
});
