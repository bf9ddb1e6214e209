import { lstat, readFile, readlink, symlink, unlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

/** Starts a gateway with its own data folder on the socket path `path`. */
function startOn(dir: string, path: string) {
  return startTestGateway(dir, { dataDir: join(dir, 'data'), listen: { socket: { path } } });
}

describe('a start that fails leaves the socket path as it found it', () => {
  it("a second gateway on a live gateway's socket refuses and does not remove it", async () => {
    const shared = join(await tmp(), 's.sock');
    const a = await startOn(await tmp(), shared);
    running.push(a);
    await expect(startOn(await tmp(), shared)).rejects.toThrow(/another gateway is already listening/);
    expect((await lstat(shared)).isSocket()).toBe(true);
    const c = await rawConnect(shared);
    expect(await c.ask('PING')).toBe('OK PONG');
    c.close();
  });

  it('a regular file or a symlink at the path is refused and left in place', async () => {
    const dir = await tmp();
    const file = join(dir, 'file.sock');
    await writeFile(file, 'precious');
    await expect(startOn(await tmp(), file)).rejects.toThrow(/exists and is not a socket/);
    expect(await readFile(file, 'utf8')).toBe('precious');
    const link = join(dir, 'link.sock');
    await symlink(file, link);
    await expect(startOn(await tmp(), link)).rejects.toThrow(/exists and is not a socket/);
    expect(await readlink(link)).toBe(file);
  });

  it("closing removes the gateway's own socket, and not one that replaced it", async () => {
    const path = join(await tmp(), 'own.sock');
    const gw = await startOn(await tmp(), path);
    await gw.close();
    await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });

    const again = await startOn(await tmp(), path);
    // Someone removes the socket and binds another server there while the gateway runs.
    await unlink(path);
    const other = createServer();
    await new Promise<void>((resolve) => other.listen(path, resolve));
    await again.close();
    expect((await lstat(path)).isSocket()).toBe(true);
    await new Promise<void>((resolve) => other.close(() => resolve()));
  });
});
