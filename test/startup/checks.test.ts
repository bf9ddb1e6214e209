import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { checkStartupPermissions, PermissionError } from '../../src/startup/checks.js';
import { startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();
const me = process.geteuid?.() ?? 0;

/** The checks on a config whose data folder is `<dir>/data` and socket `<dir>/gw.sock`, as `uid`. */
async function check(dir: string, overrides: ConfigInput = {}, uid = me): Promise<unknown> {
  const config = validateConfig(
    { dataDir: 'data', listen: { socket: { path: 'gw.sock' } }, kms: { adapters: { local: { enabled: true } } }, ...overrides },
    'test',
  );
  return checkStartupPermissions(config, dir, { uid }).then(
    () => undefined,
    (err: unknown) => err,
  );
}

/** A data folder with a local KEK in it, as a gateway leaves it. */
async function dataWithKek(dir: string, kekMode = 0o600): Promise<string> {
  await mkdir(join(dir, 'data'), { mode: 0o700 });
  const kek = join(dir, 'data', 'local-kek');
  await writeFile(kek, Buffer.alloc(32, 7), { mode: kekMode });
  await chmod(kek, kekMode);
  return kek;
}

describe('start-up permission checks', () => {
  it('accepts what the gateway makes itself, and a data folder straight inside /tmp', async () => {
    const dir = await tmp();
    expect(await check(dir)).toBeUndefined(); // nothing there yet: the gateway creates it 0700
    await dataWithKek(dir);
    expect(await check(dir)).toBeUndefined();
    // Parents are not checked: /tmp is world-writable (sticky), the data folder in it is not.
    expect(await check(dir, { dataDir: dir, listen: { socket: { path: join(dir, 's.sock') } } })).toBeUndefined();
    await chmod(dir, 0o711); // reachable by clients, writable by nobody else: fine for a socket folder
    expect(await check(dir, { dataDir: join(dir, 'data'), listen: { socket: { path: join(dir, 's.sock') } } })).toBeUndefined();
  });

  it('refuses a data folder writable by group or others, saying how to fix it', async () => {
    const dir = await tmp();
    await dataWithKek(dir);
    await chmod(join(dir, 'data'), 0o777);
    const err = await check(dir);
    expect(err).toBeInstanceOf(PermissionError);
    expect((err as Error).message).toBe(
      `refusing to start: data folder (dataDir) ${dir}/data is writable by group and others (mode 0777), who could replace what is in it: chmod 700 ${dir}/data`,
    );
    await chmod(join(dir, 'data'), 0o770);
    expect((await check(dir)) as Error).toHaveProperty('message', expect.stringContaining('is writable by group (mode 0770)'));
  });

  it('refuses a data folder or KEK owned by another uid', async () => {
    const dir = await tmp();
    const kek = await dataWithKek(dir);
    // Root's files are always accepted, so as root the files are given to someone first.
    const owner = me === 0 ? 4242 : me;
    if (me === 0) for (const p of [join(dir, 'data'), kek]) await chown(p, owner, owner);
    const err = (await check(dir, {}, owner + 1)) as Error;
    expect(err).toBeInstanceOf(PermissionError);
    expect(err.message).toContain(
      `data folder (dataDir) ${dir}/data is owned by uid ${owner}, not by this gateway's uid ${owner + 1}, who could change it: chown ${owner + 1} ${dir}/data`,
    );
    expect(err.message).toContain(`local KEK file (keys.defaultKek) ${kek} is owned by uid ${owner}`);
  });

  it('refuses a local KEK readable by others, and checks it only when the default KEK is local://', async () => {
    const dir = await tmp();
    const kek = await dataWithKek(dir, 0o644);
    expect(((await check(dir)) as Error).message).toBe(
      `refusing to start: local KEK file (keys.defaultKek) ${kek} is open to group or others (mode 0644): chmod 600 ${kek} (if others may have read it, treat that KEK as exposed and REWRAP keys under a new one)`,
    );
    expect(await check(dir, { keys: { defaultKek: 'fake://kek' } })).toBeUndefined();
  });

  it('checks a local KEK outside the data folder, and its folder', async () => {
    const dir = await tmp();
    await mkdir(join(dir, 'keks'), { mode: 0o700 });
    await writeFile(join(dir, 'keks', 'k'), Buffer.alloc(32), { mode: 0o640 });
    await chmod(join(dir, 'keks'), 0o777);
    const message = ((await check(dir, { keys: { defaultKek: `local://${dir}/keks/k` } })) as Error).message;
    expect(message).toContain(`local KEK folder (keys.defaultKek) ${dir}/keks is writable by group and others (mode 0777)`);
    expect(message).toContain(`local KEK file (keys.defaultKek) ${dir}/keks/k is open to group or others (mode 0640)`);
  });

  it('refuses a socket folder that others can write, and a shared sticky one like /tmp', async () => {
    const dir = await tmp();
    await mkdir(join(dir, 'run'), { mode: 0o700 });
    await chmod(join(dir, 'run'), 0o757);
    expect(((await check(dir, { listen: { socket: { path: 'run/gw.sock' } } })) as Error).message).toBe(
      `refusing to start: socket folder (listen.socket.path) ${dir}/run is writable by others (mode 0757), who could replace what is in it: chmod go-w ${dir}/run`,
    );
    await chmod(join(dir, 'run'), 0o1777);
    expect(((await check(dir, { listen: { socket: { path: 'run/gw.sock' } } })) as Error).message).toContain(
      'is writable by group and others (mode 01777), who could replace what is in it: give it a folder of its own',
    );
    expect(await check(dir, { listen: { socket: null } })).toBeUndefined();
  });

  it.skipIf(me !== 0)('the issue: uid 101 pre-made data/ 0777 with a 0644 KEK of zeros; root refuses before opening anything', async () => {
    const dir = await tmp();
    const kek = await dataWithKek(dir, 0o644);
    await writeFile(kek, Buffer.alloc(32));
    await chown(join(dir, 'data'), 101, 101);
    await chown(kek, 101, 101);
    await chmod(join(dir, 'data'), 0o777);
    const err = await startTestGateway(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PermissionError);
    const message = (err as Error).message;
    expect(message).toContain(`${dir}/data is owned by uid 101, not by this gateway's uid 0`);
    expect(message).toContain(`${dir}/data is writable by group and others (mode 0777)`);
    expect(message).toContain(`${kek} is owned by uid 101`);
    expect(message).toContain(`${kek} is open to group or others (mode 0644)`);
    // Nothing was opened or made: no store, no lock, no socket; the KEK is as it was.
    expect((await readdir(join(dir, 'data'))).sort()).toEqual(['local-kek']);
    expect(existsSync(join(dir, 'gw.sock'))).toBe(false);
    expect(await readFile(kek)).toEqual(Buffer.alloc(32));
  });

  it('startGateway refuses a 0777 data folder and a 0644 KEK before opening anything', async () => {
    const dir = await tmp();
    const kek = await dataWithKek(dir, 0o644);
    await chmod(join(dir, 'data'), 0o777);
    const err = await startTestGateway(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PermissionError);
    expect((err as Error).message).toMatch(/data\/? is writable by group and others .*; local KEK file .* is open to group or others/);
    expect(await readdir(join(dir, 'data'))).toEqual(['local-kek']);
    expect(existsSync(join(dir, 'gw.sock'))).toBe(false);
    expect(await readFile(kek)).toEqual(Buffer.alloc(32, 7));
  });

  it('a gateway starts on what it made, and again after a restart', async () => {
    const dir = await tmp();
    const first = await startTestGateway(dir);
    await first.close();
    running.push(await startTestGateway(dir));
  });
});
