// Which KEKs a client may make a key's KEK: local:// off unless enabled and confined to one
// folder, and KEK files that cannot stall the gateway's file I/O (a FIFO named as a KEK).
import { symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureLocalKek } from '../../adapters/local/index.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { fileLines } from '../audit/util.js';
import { mkfifo, releaseFifoReaders } from '../helpers/fifo.js';
import { okPayload, rawConnect, startTestGateway, useRunningGateways, type RawConn, type TestGateway } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

async function gateway(dir: string, overrides: ConfigInput = {}): Promise<TestGateway> {
  const gw = await startTestGateway(dir, overrides);
  running.push(gw);
  return gw;
}

/** Runs `request` (answered OK 1) on a gateway over `dir`, closes it, then starts one with `overrides`. */
async function restartAfter(dir: string, request: string, overrides: ConfigInput): Promise<TestGateway> {
  const first = await gateway(dir);
  const c = await rawConnect(first.socketPath as string);
  expect(await c.ask(request)).toBe('OK 1');
  c.close();
  await first.close();
  return gateway(dir, overrides);
}

/** The KEK URIs a key's versions are wrapped under. */
async function keksOf(c: RawConn, id: string): Promise<string[]> {
  return (JSON.parse(okPayload(await c.ask(`INFO ${id}`))) as { versions: Array<{ kek: string }> }).versions.map((v) => v.kek);
}

describe('local:// KEKs: off unless enabled, confined to one folder', () => {
  it('with local:// off, a client cannot name a KEK file, and keys already under one are cut off', async () => {
    const dir = await tmp();
    const off = { keys: { defaultKek: 'fake://prod' }, kms: { adapters: { local: { enabled: false } } } };
    const gw = await restartAfter(dir, 'CREATE dev/k', off);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('CREATE a local://local-kek')).toBe('ERR KMS_DENIED local KEKs are disabled on this gateway');
    expect(await c.ask('GET dev/k')).toBe('ERR KMS_DENIED local KEKs are disabled on this gateway');
    expect(await c.ask('CREATE a')).toBe('OK 1');
  });

  it('relative paths stay inside the folder: ../ and absolute paths outside it, and symlinks out of it, are refused', async () => {
    const dir = await tmp();
    await ensureLocalKek(join(dir, 'x.kek'));
    const gw = await gateway(dir);
    await symlink(join(dir, 'x.kek'), join(dir, 'data', 'link.kek'));
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('CREATE pg/k')).toBe('OK 1');
    const dek = okPayload(await c.ask('GET pg/k'));
    for (const kek of ['local://../x.kek', 'local://../../x.kek', `local://${dir}/x.kek`, 'local:///etc/hostname']) {
      expect(await c.ask(`REWRAP pg/k ${kek}`), kek).toBe('ERR KMS_DENIED local KEK file is outside the allowed folder');
    }
    expect(await c.ask('REWRAP pg/k local://link.kek')).toBe('ERR KMS_DENIED local KEK file is outside the allowed folder');
    expect(await c.ask('ROTATE pg/k local://link.kek')).toBe('ERR KMS_DENIED local KEK file is outside the allowed folder');
    gw.cache.clear();
    expect(okPayload(await c.ask('GET pg/k@1'))).toBe(dek);
    expect(await keksOf(c, 'pg/k')).toEqual(['local://local-kek']);
  });

  it('a FIFO named as a KEK is refused at once, however spelled, and the store and audit log keep working', async () => {
    const dir = await tmp();
    const gw = await gateway(dir, { kms: { timeoutMs: 3000 }, audit: { file: 'audit.log', fsync: 'always' } });
    const data = join(dir, 'data');
    const fifo = join(data, 'fifo');
    mkfifo(fifo);
    try {
      const c = await rawConnect(gw.socketPath as string);
      for (let i = 1; i <= 5; i++) expect(await c.ask(`CREATE pg/f${i}`)).toBe('OK 1');
      const spellings = ['local://fifo', 'local://./fifo', 'local://sub/../fifo', `local://${fifo}`, 'local://.//fifo'];
      const started = performance.now();
      c.write(spellings.map((kek, i) => `ROTATE pg/f${i + 1} ${kek}\n`).join(''));
      const replies = await c.lines(5);
      expect(performance.now() - started).toBeLessThan(1000);
      expect(replies).toEqual(spellings.map(() => 'ERR KMS_DENIED local KEK must be a regular file of exactly 32 bytes'));
      expect(await c.ask('CREATE other')).toBe('OK 1');
      c.close();
      await gw.close();
      const records = (await fileLines(join(dir, 'audit.log'))).map((l) => JSON.parse(l) as { verb: string; outcome: string });
      expect(records.map((r) => `${r.verb} ${r.outcome}`)).toEqual([
        ...Array.from({ length: 5 }, () => 'CREATE OK'),
        ...Array.from({ length: 5 }, () => 'ROTATE KMS_DENIED'),
        'CREATE OK',
      ]);
    } finally {
      releaseFifoReaders(fifo);
    }
  });
});
