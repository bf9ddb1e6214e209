import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { KeyStoreError } from '../../src/keystore/errors.js';
import { FileBackend } from '../../src/keystore/file/index.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const LOCK_FILE = 'keystore.lock';
const BIN = resolve(import.meta.dirname, '../../bin/kmsgw.js');
const canUnshare =
  process.getuid?.() === 0 && spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true'], { stdio: 'ignore' }).status === 0;

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    // The gateway behind a wrapper first, so none is left running on its own.
    for (const pid of childrenOfSync(c.pid as number)) process.kill(pid, 'SIGKILL');
    c.kill('SIGKILL');
  }
});

/** Polls `probe` until it returns a value, failing after `ms`. */
async function until<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await probe();
    if (got !== undefined) return got;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs `kmsgw serve` on a store in `dir` (behind `wrapper`, e.g. unshare); resolves once it logged `kmsgw ready`. */
async function serve(dir: string, wrapper: string[] = []) {
  const config = join(dir, 'kmsgw.yaml');
  await writeFile(config, 'dataDir: data\nlisten:\n  socket:\n    path: gw.sock\nkms:\n  adapters:\n    local:\n      enabled: true\n');
  const argv = [...wrapper, process.execPath, BIN, 'serve', '--config', config];
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let log = '';
  child.stderr?.on('data', (c: Buffer) => (log += c.toString()));
  const exited = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  await Promise.race([
    until('kmsgw ready', () => (log.includes('kmsgw ready') ? true : undefined)),
    exited.then((code) => Promise.reject(new Error(`serve exited ${code}: ${log}`))),
  ]);
  return { child, exited, log: () => log };
}

/** The pids of `pid`'s children (the gateway behind a wrapper). */
function childrenOfSync(pid: number): number[] {
  let text = '';
  try {
    text = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8');
  } catch {
    // gone already
  }
  return text.trim().split(/\s+/).filter(Boolean).map(Number);
}

/** True once `pid` is a zombie whose threads have all exited (so its files are closed), not yet reaped. */
async function isZombie(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  return state === 'Z' && (await readdir(`/proc/${pid}/task`).catch(() => [])).length === 1;
}

describe('store lock: held by the kernel for a live holder only', () => {
  it('a lock file naming a live, unrelated process does not stop start-up', async () => {
    const dir = await tmp();
    const sleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
    children.push(sleeper);
    for (const pid of [sleeper.pid as number, process.pid, 1]) {
      await writeFile(join(dir, LOCK_FILE), `${pid}\n`);
      const store = await FileBackend.open(dir);
      // The pid is written for humans; it is this process's while the store is open.
      expect((await readFile(join(dir, LOCK_FILE), 'utf8')).trim()).toBe(String(process.pid));
      await store.close();
    }
  });

  it('two live holders on one store: the second gets a KeyStoreError saying so; closing frees it', async () => {
    const dir = await tmp();
    const store = await FileBackend.open(dir);
    const err = await FileBackend.open(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KeyStoreError);
    expect((err as Error).message).toBe(
      `key store ${dir} is in use by another running gateway (its lock file names pid ${process.pid}): ${join(dir, LOCK_FILE)} is flock-ed; two gateways must not share a store (stop the other one, or give this one its own dataDir)`,
    );
    expect(store.lockMechanism).toBe(`flock ${join(dir, LOCK_FILE)}`);
    await store.close();
    expect(await readFile(join(dir, LOCK_FILE), 'utf8')).toBe('');
    await (await FileBackend.open(dir)).close();
  });

  it('a running gateway process keeps another off its store', async () => {
    const dir = await tmp();
    await serve(dir);
    await expect(FileBackend.open(join(dir, 'data', 'keys'))).rejects.toThrow(/is in use by another running gateway/);
  });

  it('a gateway killed with SIGKILL frees the lock at once, even before its parent reaps it', async () => {
    const dir = await tmp();
    // The shell becomes `sleep`, which never reaps its child: the killed gateway stays a zombie,
    // so its pid still answers kill(pid, 0), while its flock went with its open files.
    const parent = await serve(dir, ['sh', '-c', '"$0" "$@" & exec sleep 600']);
    const [gateway] = childrenOfSync(parent.child.pid as number);
    process.kill(gateway as number, 'SIGKILL');
    await until('the zombie', async () => ((await isZombie(gateway as number)) ? true : undefined));
    const store = await FileBackend.open(join(dir, 'data', 'keys'));
    await store.close();
  });

  it.skipIf(!canUnshare)('a gateway that was PID 1 in its namespace and killed with -9 starts again (run as root)', async () => {
    const dir = await tmp();
    const ns = ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child'];
    const first = await serve(dir, ns);
    expect((await readFile(join(dir, 'data', 'keys', LOCK_FILE), 'utf8')).trim()).toBe('1');
    const [gateway] = childrenOfSync(first.child.pid as number);
    process.kill(gateway as number, 'SIGKILL');
    await first.exited;
    // The lock file still says 1, which is the next gateway itself.
    expect((await readFile(join(dir, 'data', 'keys', LOCK_FILE), 'utf8')).trim()).toBe('1');
    const second = await serve(dir, ns);
    expect(second.log()).toContain('"storeLock":"flock ');
  });
});
