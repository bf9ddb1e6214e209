import { execFile } from 'node:child_process';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { rawConnect } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { serveProcess, type Served } from '../helpers/serve-process.js';
import { notifySocket } from './spawned.js';

const tmp = useTmpDirs();
const BIN = resolve(import.meta.dirname, '../../bin/kmsgw.js');
const uid = process.getuid?.() ?? 0;

/** A config for a spawned gateway in `dir`: local KEK, socket, audit log, and a policy granting `keys` to this uid. */
function configText(keys: string[], extra: Record<string, unknown> = {}): string {
  return stringify({
    dataDir: 'data',
    listen: { socket: { path: 'run/gw.sock' } },
    keys: { autoCreate: true },
    kms: { adapters: { local: { enabled: true } } },
    audit: { file: 'audit.log', fsync: 'always' },
    log: { level: 'warn' },
    policy: { clients: [{ name: 'me', match: { uids: [uid] }, grants: [{ verbs: ['GET'], keys }] }] },
    ...extra,
  });
}

async function ask(dir: string, line: string): Promise<string> {
  const c = await rawConnect(join(dir, 'run', 'gw.sock'));
  try {
    return await c.ask(line);
  } finally {
    c.close();
  }
}

function logged(served: Served, msg: string, from = 0): Promise<Record<string, unknown>> {
  return served.log
    .waitFor((l) => l.includes(`"msg":"${msg}`), `log line "${msg}"`, from)
    .then((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('kmsgw serve under systemd (a real NOTIFY_SOCKET) and SIGHUP', () => {
  it('READY=1 once serving, WATCHDOG=1 with WATCHDOG_USEC, STOPPING=1 on SIGTERM', async () => {
    const dir = await tmp();
    const notify = await notifySocket(dir);
    await writeFile(join(dir, 'kmsgw.yaml'), configText(['a/*']), { mode: 0o600 });
    const served = serveProcess(join(dir, 'kmsgw.yaml'), { NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '200000' });
    await notify.messages.waitFor((m) => m === 'READY=1', 'READY=1');
    // Ready means serving: the socket answers at once.
    expect(await ask(dir, 'PING')).toBe('OK PONG');
    await notify.messages.waitFor((m) => m === 'WATCHDOG=1', 'WATCHDOG=1');
    const before = notify.messages.all.length;
    expect(await served.stop()).toBe(0);
    await notify.messages.waitFor((m) => m === 'STOPPING=1', 'STOPPING=1', before);
    expect(notify.messages.all.indexOf('STOPPING=1')).toBeGreaterThan(notify.messages.all.indexOf('READY=1'));
  });

  it('SIGHUP: a good config applies (policy, log level), a bad one is refused naming the field, restart-only fields are named', async () => {
    const dir = await tmp();
    const notify = await notifySocket(dir);
    const file = join(dir, 'kmsgw.yaml');
    await writeFile(file, configText(['a/*']), { mode: 0o600 });
    const served = serveProcess(file, { NOTIFY_SOCKET: notify.path });
    await notify.messages.waitFor((m) => m === 'READY=1', 'READY=1');
    expect(await ask(dir, 'GET a/1')).toMatch(/^OK /);
    expect(await ask(dir, 'GET b/1')).toMatch(/^ERR FORBIDDEN/);
    // Level warn: no info line so far.
    expect(served.records().filter((r) => r['level'] === 30)).toEqual([]);

    // 1. A good config: grants b/*, level info.
    await writeFile(file, configText(['a/*', 'b/*'], { log: { level: 'info' } }));
    let mark = notify.messages.all.length;
    served.child.kill('SIGHUP');
    const reloaded = await logged(served, 'configuration reloaded');
    expect(reloaded['applied']).toEqual(expect.arrayContaining(['log.level', 'policy.clients']));
    await notify.messages.waitFor((m) => m.startsWith('RELOADING=1\nMONOTONIC_USEC='), 'RELOADING=1', mark);
    await notify.messages.waitFor((m) => m === 'READY=1', 'READY=1 after the reload', mark + 1);
    expect(await ask(dir, 'GET b/1')).toMatch(/^OK /);

    // 2. A bad config: refused, the field named, the running config (b/* allowed, level info) stays.
    await writeFile(file, configText(['a/*'], { log: { level: 'info' }, limits: { maxConnections: 0 } }));
    let logMark = served.log.all.length;
    mark = notify.messages.all.length;
    served.child.kill('SIGHUP');
    const refused = await logged(served, 'reload refused', logMark);
    expect(refused['fields']).toEqual(['limits.maxConnections']);
    expect(refused['level']).toBe(50);
    await notify.messages.waitFor((m) => m === 'READY=1', 'READY=1 after the refused reload', mark + 1);
    expect(await ask(dir, 'GET b/1')).toMatch(/^OK /);

    // 3. Restart-only fields: named in a warning; what can apply still does (b/* is taken away).
    await writeFile(file, configText(['a/*'], { log: { level: 'info' }, keys: { autoCreate: false }, limits: { shutdownGraceMs: 5 } }));
    logMark = served.log.all.length;
    served.child.kill('SIGHUP');
    const warned = await logged(served, 'reload: these changed fields', logMark);
    expect(warned['fields']).toEqual(['keys.autoCreate', 'limits.shutdownGraceMs']);
    expect((await logged(served, 'configuration reloaded', logMark))['applied']).toEqual(['policy.clients']);
    expect(await ask(dir, 'GET b/1')).toMatch(/^ERR FORBIDDEN/);
    expect(await ask(dir, 'GET a/2')).toMatch(/^OK /); // autoCreate is still on: restart-only

    expect(await served.stop()).toBe(0);
  });

  it('SIGHUP after `mv audit.log audit.log.1` reopens the audit file; the chain goes on and both files verify', async () => {
    const dir = await tmp();
    const notify = await notifySocket(dir);
    const file = join(dir, 'kmsgw.yaml');
    await writeFile(file, configText(['a/*'], { log: { level: 'info' } }), { mode: 0o600 });
    const served = serveProcess(file, { NOTIFY_SOCKET: notify.path });
    await notify.messages.waitFor((m) => m === 'READY=1', 'READY=1');
    for (const k of ['a/1', 'a/2', 'a/3']) expect(await ask(dir, `GET ${k}`)).toMatch(/^OK /);
    await rename(join(dir, 'audit.log'), join(dir, 'audit.log.1'));
    expect(await ask(dir, 'GET a/4')).toMatch(/^OK /); // still written to the renamed file
    const mark = served.log.all.length;
    served.child.kill('SIGHUP');
    expect((await logged(served, 'configuration reloaded', mark))['reopened']).toEqual(['audit.file']);
    for (const k of ['a/5', 'a/6']) expect(await ask(dir, `GET ${k}`)).toMatch(/^OK /);
    expect(await served.stop()).toBe(0);

    const lines = async (name: string) =>
      (await readFile(join(dir, name), 'utf8'))
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as { seq: number; keyId?: string });
    const old = await lines('audit.log.1');
    const now = await lines('audit.log');
    expect(old.map((r) => r.keyId).filter(Boolean)).toEqual(['a/1', 'a/2', 'a/3', 'a/4']);
    expect(now.map((r) => r.keyId).filter(Boolean)).toEqual(['a/5', 'a/6']);
    expect(now[0]?.seq).toBe((old.at(-1)?.seq ?? 0) + 1);

    const run = promisify(execFile);
    const both = await run(process.execPath, [BIN, 'audit', 'verify', join(dir, 'audit.log.1'), join(dir, 'audit.log')]);
    expect(both.stdout).toContain('audit.log: 2 records, chain intact');
    // Alone, the new file does not start a chain; verify says what to do.
    await expect(run(process.execPath, [BIN, 'audit', 'verify', join(dir, 'audit.log')])).rejects.toThrow(
      /verify it after the file before it/,
    );
    // With the old file's last line noted instead of the file itself.
    const lastLine = (await readFile(join(dir, 'audit.log.1'), 'utf8')).trimEnd().split('\n').at(-1) as string;
    const { createHash } = await import('node:crypto');
    const after = `${old.at(-1)?.seq}:${createHash('sha256').update(lastLine).digest('hex')}`;
    const alone = await run(process.execPath, [BIN, 'audit', 'verify', '--after', after, join(dir, 'audit.log')]);
    expect(alone.stdout).toBe('2 records, chain intact\n');
  });
});

describe('log formats of kmsgw serve', () => {
  it('JSON by default when stderr is not a terminal; pretty with KMSGW_LOG_FORMAT=pretty', async () => {
    const dir = await tmp();
    const file = join(dir, 'kmsgw.yaml');
    await writeFile(file, configText(['a/*'], { log: { level: 'info' } }), { mode: 0o600 });
    // 'configuration loaded' is logged once SIGTERM is handled.
    const json = serveProcess(file);
    await json.log.waitFor((l) => l.includes('configuration loaded'), 'configuration loaded');
    const ready = JSON.parse(await json.log.waitFor((l) => l.includes('kmsgw ready'), 'kmsgw ready')) as Record<string, unknown>;
    expect(ready).toMatchObject({ level: 30, service: 'kmsgw', msg: 'kmsgw ready' });
    expect(typeof ready['time']).toBe('string');
    expect(json.log.all.every((l) => JSON.parse(l) !== undefined)).toBe(true);
    expect(await json.stop()).toBe(0);
    // The last line, written just before exit, is there: writes are synchronous.
    expect(json.log.all.at(-1)).toBeDefined();

    const pretty = serveProcess(file, { KMSGW_LOG_FORMAT: 'pretty' });
    await pretty.log.waitFor((l) => l.includes('configuration loaded'), 'configuration loaded (pretty)');
    const line = await pretty.log.waitFor((l) => l.includes('kmsgw ready'), 'kmsgw ready (pretty)');
    expect(line).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO.*: kmsgw ready/);
    expect(() => JSON.parse(line)).toThrow();
    expect(pretty.log.all.some((l) => /^\s+defaultKek: "local:\/\/local-kek"/.test(l))).toBe(true);
    expect(await pretty.stop()).toBe(0);
    expect(pretty.log.all.some((l) => l.includes('shutting down'))).toBe(true);
  });
});
