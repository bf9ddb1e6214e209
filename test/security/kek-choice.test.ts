// Which KEKs a client may make a key's KEK: the configured allow-list (keys.allowedKeks), the
// policy's per-grant `keks`, local:// off unless enabled and confined to one folder, and KEK
// files that cannot stall the gateway's file I/O (a FIFO named as a KEK).
import { chmod, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureLocalKek } from '../../adapters/local/index.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { hashToken } from '../../src/policy/policy.js';
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

const ops = { name: 'ops', match: { tokens: [hashToken('tok-ops')] }, grants: [{ verbs: ['admin' as const], keys: ['*'] }] };

async function as(gw: TestGateway, token: string): Promise<RawConn> {
  const c = await rawConnect(gw.socketPath as string);
  expect(await c.ask(`AUTH ${token}`)).toMatch(/^OK /);
  return c;
}

const NOT_ALLOWED = 'ERR FORBIDDEN KEK not allowed';

/** Sends each request in turn and checks its reply. */
async function exchange(c: RawConn, steps: ReadonlyArray<readonly [request: string, reply: string]>): Promise<void> {
  for (const [request, reply] of steps) expect(await c.ask(request), request).toBe(reply);
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
  const info = JSON.parse(okPayload(await c.ask(`INFO ${id}`))) as { versions: Array<{ keks: Array<{ kek: string }> }> };
  return info.versions.map((v) => v.keks.map((k) => k.kek).join(','));
}

describe('which KEK a client may name', () => {
  it('a client with only ROTATE and REWRAP cannot make its own file the KEK (the product default allows only keys.defaultKek)', async () => {
    const dir = await tmp();
    const own = join(dir, 'own.kek');
    await writeFile(own, Buffer.alloc(32, 7));
    await chmod(own, 0o644);
    await writeFile(join(dir, 'x.kek'), Buffer.alloc(32, 8));
    const rotator = {
      name: 'rotator',
      match: { tokens: [hashToken('tok-rot')] },
      grants: [{ verbs: ['ROTATE' as const, 'REWRAP' as const], keys: ['pg/*'] }],
    };
    const gw = await gateway(dir, { keys: { allowedKeks: undefined }, policy: { clients: [ops, rotator] } });
    const admin = await as(gw, 'tok-ops');
    expect(await admin.ask('CREATE pg/rot')).toBe('OK 1');
    await exchange(await as(gw, 'tok-rot'), [
      [`ROTATE pg/rot local://${own}`, NOT_ALLOWED],
      ['REWRAP pg/rot local://../x.kek', NOT_ALLOWED],
      ['REWRAP pg/rot fake://mine', NOT_ALLOWED],
      // The configured KEK itself is fine, named or not.
      ['ROTATE pg/rot local://local-kek', 'OK 2'],
      ['ROTATE pg/rot', 'OK 3'],
    ]);
    expect(await keksOf(admin, 'pg/rot')).toEqual(['local://local-kek', 'local://local-kek', 'local://local-kek']);
  });

  it('the allow-list holds without a policy too (development), for every verb that wraps', async () => {
    const dir = await tmp();
    await ensureLocalKek(join(dir, 'data', 'other-kek'));
    const gw = await gateway(dir, { keys: { allowedKeks: undefined } });
    const c = await rawConnect(gw.socketPath as string);
    await exchange(c, [
      ['CREATE a local://other-kek', NOT_ALLOWED],
      ['CREATE a fake://x', NOT_ALLOWED],
      ['CREATE a', 'OK 1'],
      ['ROTATE a local://other-kek', NOT_ALLOWED],
      ['REWRAP a local://other-kek', NOT_ALLOWED],
      ['ROTATE a', 'OK 2'],
    ]);
    expect(JSON.parse(okPayload(await c.ask('LIST')))).toEqual(['a']);
  });

  it('keys.allowedKeks globs widen it; a ROTATE keeping a KEK no longer allowed is refused', async () => {
    const dir = await tmp();
    const gw = await restartAfter(dir, 'CREATE old fake://retired', { keys: { allowedKeks: ['local://local-kek', 'fake://pg/*'] } });
    await exchange(await rawConnect(gw.socketPath as string), [
      ['CREATE a fake://pg/1', 'OK 1'],
      ['ROTATE a fake://pg/2', 'OK 2'],
      ['ROTATE a fake://app/1', NOT_ALLOWED],
      ['ROTATE old', NOT_ALLOWED],
      ['REWRAP old fake://pg/3', 'OK 1'],
      ['ROTATE old', 'OK 2'],
    ]);
  });

  it("a grant's keks restrict the KEKs its CREATE, ROTATE and REWRAP may name; the config's list still applies", async () => {
    const dir = await tmp();
    const pgOps = {
      name: 'pg-ops',
      match: { tokens: [hashToken('tok-pg-ops')] },
      grants: [{ verbs: ['admin' as const], keys: ['pg/*'], keks: ['fake://pg/*'] }],
    };
    const gw = await gateway(dir, {
      keys: { allowedKeks: ['local://local-kek', 'fake://pg/1', 'fake://app/*'] },
      policy: { clients: [ops, pgOps] },
    });
    await exchange(await as(gw, 'tok-pg-ops'), [
      ['CREATE pg/a fake://pg/1', 'OK 1'],
      ['ROTATE pg/a', 'OK 2'], // names no KEK: keeps fake://pg/1
      ['ROTATE pg/a fake://app/1', NOT_ALLOWED], // config yes, grant no
      ['REWRAP pg/a local://local-kek', NOT_ALLOWED],
      ['CREATE pg/b fake://pg/2', NOT_ALLOWED], // grant yes, config no
      ['CREATE pg/b', 'OK 1'], // names no KEK: the configured default, not the client's choice
      ['CREATE app/x fake://pg/1', 'ERR FORBIDDEN not allowed to CREATE this key'],
    ]);
    // A grant without keks may name whatever the config allows.
    await exchange(await as(gw, 'tok-ops'), [
      ['CREATE app/x fake://app/7', 'OK 1'],
      ['REWRAP pg/a local://local-kek', 'OK 2'],
    ]);
  });
});

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

  it('a default KEK no adapter serves stops start-up, naming the setting', async () => {
    await expect(startTestGateway(await tmp(), { keys: { defaultKek: 'nope://kek', allowedKeks: ['*'] } })).rejects.toThrow(
      'keys.defaultKek nope://kek: no KEK adapter for scheme nope',
    );
  });

  it('a default KEK outside the allowed folder stops start-up instead of being created there', async () => {
    const dir = await tmp();
    const outside = join(await tmp(), 'kek');
    await expect(
      startTestGateway(dir, {
        keys: { defaultKek: `local://${outside}`, allowedKeks: ['*'] },
        kms: { adapters: { local: { enabled: true } } },
      }),
    ).rejects.toThrow(`keys.defaultKek local://${outside}: local KEK file is outside the allowed folder`);
    await expect(stat(outside)).rejects.toMatchObject({ code: 'ENOENT' });
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
