import { execFile, spawnSync } from 'node:child_process';
import { chmod } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { peerCredUnavailable } from '../../src/server/peercred.js';
import { rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

const BIN = resolve(import.meta.dirname, '../../bin/kmsgw.js');
const me = process.getuid?.() ?? -1;
const postgresUid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim() || NaN);

describe('Unix socket peers identified by SO_PEERCRED', () => {
  it('the addon is built and loads (npm install builds it; CI must not fall back silently)', () => {
    expect(peerCredUnavailable()).toBeUndefined();
  });

  it('grants keys per uid: this uid gets what its client may do, and nothing else', async () => {
    const dir = await tmp();
    const gw = await startTestGateway(dir, {
      policy: {
        clients: [
          { name: 'me', match: { uids: [me] }, grants: [{ verbs: ['GET', 'CREATE'], keys: ['mine/*'] }] },
          { name: 'someone-else', match: { uids: [me + 1] }, grants: [{ verbs: ['GET'], keys: ['theirs/*'] }] },
        ],
      },
    });
    running.push(gw);
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('CREATE mine/a')).toBe('OK 1');
    expect(await c.ask('GET mine/a')).toMatch(/^OK [A-Za-z0-9+/]{43}=$/);
    expect(await c.ask('GET theirs/a')).toBe('ERR FORBIDDEN not allowed to GET this key');
    expect(await c.ask('ROTATE mine/a')).toBe('ERR FORBIDDEN not allowed to ROTATE this key');
    c.close();
  });

  it.skipIf(me !== 0 || Number.isNaN(postgresUid))('the postgres OS user gets pg/* and nobody else does (run as root)', async () => {
    const dir = await tmp();
    await chmod(dir, 0o711);
    const gw = await startTestGateway(dir, {
      listen: { socket: { path: join(dir, 'gw.sock'), mode: '0666' } },
      keys: { autoCreate: true },
      policy: {
        clients: [
          { name: 'postgres', match: { uids: [postgresUid] }, grants: [{ verbs: ['GET'], keys: ['pg/*'] }] },
          { name: 'root', match: { uids: [0] }, grants: [{ verbs: ['GET'], keys: ['app/*'] }] },
        ],
      },
    });
    running.push(gw);
    // Asynchronously: the gateway runs in this process and must keep answering.
    const asPostgres = (key: string) =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((done) => {
        execFile(
          'runuser',
          ['-u', 'postgres', '--', process.execPath, BIN, 'get', key, '--format', 'hex', '--socket', gw.socketPath as string],
          (err, stdout, stderr) => done({ status: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
        );
      });
    const ok = await asPostgres('pg/cluster-1');
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toMatch(/^[0-9a-f]{64}\n$/);
    const denied = await asPostgres('app/secrets');
    expect(denied.status).toBe(1);
    expect(denied.stderr).toBe('kmsgw: FORBIDDEN not allowed to GET this key\n');
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask('GET pg/cluster-1')).toBe('ERR FORBIDDEN not allowed to GET this key');
    expect(await c.ask('GET app/secrets')).toMatch(/^OK /);
    c.close();
  });
});
