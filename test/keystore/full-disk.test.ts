import { execFileSync } from 'node:child_process';
import { mkdir, open, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { fileNameFor } from '../../src/keystore/file/index.js';
import { okPayload, rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const mounted: string[] = [];
// After-hooks run in reverse order of registration: gateways close, then the disk is unmounted, then folders go.
afterEach(() => {
  for (const dir of mounted.splice(0)) execFileSync('umount', [dir]);
});
const running = useRunningGateways();

/** A real, tiny file system (tmpfs; the suite runs as root, as CI does) to fill up. */
async function smallDisk(dir: string): Promise<string> {
  await mkdir(dir, { mode: 0o700 });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'tmpfs', dir], { stdio: 'pipe' });
  } catch (err) {
    throw new Error(`this test mounts a tmpfs and needs root (as CI runs): ${(err as Error).message}`, { cause: err });
  }
  mounted.push(dir);
  return dir;
}

/** Writes a filler file until the file system says ENOSPC. */
async function fill(path: string): Promise<void> {
  const handle = await open(path, 'w');
  const chunk = Buffer.alloc(4096, 1);
  try {
    for (;;) await handle.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await handle.close();
  }
}

describe('a full disk', () => {
  it('answers STORE_UNAVAILABLE naming the cause, damages nothing, and recovers when space is freed', async () => {
    const dir = await tmp();
    const data = await smallDisk(join(dir, 'data'));
    const gw = await startTestGateway(dir);
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('CREATE kept')).toBe('OK 1');
    const kept = okPayload(await c.ask('GET kept'));
    const before = await readFile(join(data, 'keys', fileNameFor('kept')), 'utf8');

    await fill(join(data, 'filler'));
    expect(await c.ask('CREATE new/key')).toBe('ERR STORE_UNAVAILABLE key store write failed: no space left on device (ENOSPC)');
    expect(await c.ask('ROTATE kept')).toBe('ERR STORE_UNAVAILABLE key store write failed: no space left on device (ENOSPC)');
    // Nothing half-done: the stored key is as it was, no temporary file is left, the connection works.
    expect(await readFile(join(data, 'keys', fileNameFor('kept')), 'utf8')).toBe(before);
    expect((await readdir(join(data, 'keys'))).sort()).toEqual([fileNameFor('kept'), 'keystore.lock']);
    expect(await c.ask('GET kept')).toBe(`OK ${kept}`);
    expect(await c.ask('INFO new/key')).toBe('ERR NOT_FOUND no such key');

    await rm(join(data, 'filler'));
    expect(await c.ask('CREATE new/key')).toBe('OK 1');
    expect(await c.ask('ROTATE kept')).toBe('OK 2');
    c.close();
  });
});
