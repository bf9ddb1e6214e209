/**
 * A real PostgreSQL 15 for end-to-end tests: initdb in a temp folder, pg_ctl start on a free
 * loopback port, SQL through psql, pg_ctl stop -m immediate on cleanup.
 *
 * PostgreSQL refuses to run as root, and the tests run as root in CI. When the test process is
 * root, every server-side binary (initdb, pg_ctl, postgres, pg_basebackup) runs as the `postgres`
 * OS user through `runuser -u postgres --`, in folders chowned to it. Whatever the server runs
 * (ssl_passphrase_command, archive_command, restore_command: `node <repo>/bin/kmsgw.js ...`) then
 * runs as `postgres` too, so it must be able to read the repository and node, and connect to the
 * gateway's socket: `startPgGateway` puts the socket in a folder anyone may traverse, with mode
 * 0666. When the test process is not root, everything runs as the current user.
 * A missing `postgres` user or missing binaries fail the test with a message; nothing is skipped.
 */
import { execFile, type ExecFileOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, chmod, chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach } from 'vitest';
import type { ConfigInput } from '../../src/config/schema.js';
import { startTestGateway, type TestGateway } from './gateway.js';
import { freePort } from './net.js';

export const REPO = resolve(import.meta.dirname, '../..');
export const KMSGW_BIN = join(REPO, 'bin', 'kmsgw.js');
/** The node binary the server's hook commands run (the one running the tests). */
export const NODE = process.execPath;

const IS_ROOT = process.getuid?.() === 0;
const PG_OS_USER = 'postgres';

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command; never rejects on a non-zero exit (the caller decides). */
export function run(cmd: string, args: readonly string[], opts: ExecFileOptions = {}): Promise<Run> {
  return new Promise((done, fail) => {
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024, timeout: 120_000, ...opts, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
        fail(new Error(`cannot run ${cmd}: ${err.message}`));
        return;
      }
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      done({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function mustRun(cmd: string, args: readonly string[], opts: ExecFileOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** The environment server-side commands get: nothing of the test process's (no KMSGW_*, NODE_OPTIONS, VITEST*). */
const SERVER_ENV: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C' };

/** Runs `cmd` as the `postgres` OS user when we are root, else as ourselves. */
export function runAsPg(cmd: string, args: readonly string[], opts: ExecFileOptions = {}): Promise<Run> {
  const o: ExecFileOptions = { env: SERVER_ENV, ...opts };
  return IS_ROOT ? run('runuser', ['-u', PG_OS_USER, '--', cmd, ...args], o) : run(cmd, args, o);
}

async function mustRunAsPg(cmd: string, args: readonly string[], opts: ExecFileOptions = {}): Promise<string> {
  const r = await runAsPg(cmd, args, opts);
  if (r.code !== 0)
    throw new Error(`${cmd} ${args.join(' ')} (as ${IS_ROOT ? PG_OS_USER : userInfo().username}) exited ${r.code}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

let binDirCache: string | undefined;

/** The PostgreSQL 15 bindir: `pg_config --bindir` if it is 15, else /usr/lib/postgresql/15/bin. Throws when absent. */
export async function pgBinDir(): Promise<string> {
  if (binDirCache) return binDirCache;
  const candidates: string[] = [];
  try {
    const r = await run('pg_config', ['--bindir']);
    if (r.code === 0) candidates.push(r.stdout.trim());
  } catch {
    // no pg_config on PATH
  }
  candidates.push('/usr/lib/postgresql/15/bin');
  for (const dir of candidates) {
    const need = ['initdb', 'pg_ctl', 'postgres', 'psql', 'pg_basebackup'];
    if (!need.every((b) => existsSync(join(dir, b)))) continue;
    const v = await run(join(dir, 'postgres'), ['--version']);
    if (/\(PostgreSQL\) 15\./.test(v.stdout)) return (binDirCache = dir);
  }
  throw new Error(
    `PostgreSQL 15 binaries not found (looked in ${candidates.join(', ')} for initdb, pg_ctl, postgres, psql, pg_basebackup). ` +
      "Install Debian's package: apt-get install -y postgresql (.ci/run does this when they are missing).",
  );
}

let preflightDone: Promise<void> | undefined;

/** Fails with a clear message when PostgreSQL cannot run here, or could not run kmsgw as its hooks do. */
export function pgPreflight(): Promise<void> {
  preflightDone ??= (async () => {
    await pgBinDir();
    if (!existsSync(join(REPO, 'dist', 'src', 'cli', 'main.js'))) {
      throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
    }
    if (IS_ROOT) {
      const id = await run('id', ['-u', PG_OS_USER]);
      if (id.code !== 0) {
        throw new Error(
          `the tests run as root and PostgreSQL refuses to; they run it as the "${PG_OS_USER}" OS user, which does not exist ` +
            "(Debian's postgresql package creates it: apt-get install -y postgresql)",
        );
      }
    }
    // The server's hooks run `node <repo>/bin/kmsgw.js` as that user: it must reach both.
    const v = await runAsPg(NODE, [KMSGW_BIN, '--version'], { cwd: '/' });
    if (v.code !== 0) {
      throw new Error(
        `the "${IS_ROOT ? PG_OS_USER : userInfo().username}" OS user cannot run ${NODE} ${KMSGW_BIN} ` +
          `(PostgreSQL's hooks run it as that user; every folder above the repository must be readable and traversable):\n${v.stderr}`,
      );
    }
  })();
  return preflightDone;
}

/** A `postgresql.conf` value, quoted as PostgreSQL wants strings. */
export function confValue(v: string | number | boolean): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  return `'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** Single-quotes one argument for /bin/sh (hook commands are run by the server through sh). */
export function shq(arg: string): string {
  return /^[A-Za-z0-9_./:@%=+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/** The shell command a PostgreSQL hook runs: `<node> <repo>/bin/kmsgw.js <args>` (`%p`/`%f` left for the server). */
export function kmsgwCommand(args: readonly string[]): string {
  return [NODE, KMSGW_BIN, ...args].map(shq).join(' ');
}

export interface PgCluster {
  /** The data directory. */
  readonly dataDir: string;
  readonly port: number;
  /** The server's stderr (pg_ctl -l): its own messages and whatever its hooks print. */
  readonly logFile: string;
  /** Appends settings to postgresql.conf (later lines win). */
  configure(settings: Record<string, string | number | boolean>): Promise<void>;
  /** pg_ctl start -w; throws with the log's tail when the server does not come up. */
  start(): Promise<void>;
  /** pg_ctl start -w, reporting instead of throwing. */
  tryStart(): Promise<{ ok: boolean; output: string }>;
  /** pg_ctl stop -m fast (or immediate); quiet when it is not running. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  /** One statement through psql; the unaligned, tuples-only result, trimmed. */
  sql(query: string, conn?: Record<string, string>): Promise<string>;
  log(): Promise<string>;
}

export interface PgHarness {
  /** A folder owned by the server's OS user (mode 0700), removed after the test. */
  pgDir(): Promise<string>;
  /** initdb a new cluster in a fresh folder, listening on 127.0.0.1 only, on a free port. Not started. */
  initCluster(opts?: { initdbArgs?: string[]; settings?: Record<string, string | number | boolean> }): Promise<PgCluster>;
  /** A cluster from an existing data directory (a base backup), on a new free port. Not started. */
  adoptCluster(dataDir: string, settings?: Record<string, string | number | boolean>): Promise<PgCluster>;
  /** A gateway whose socket the server's OS user can connect to. */
  startGateway(overrides?: ConfigInput): Promise<TestGateway>;
}

/**
 * Registers an afterEach that stops every cluster (pg_ctl stop -m immediate), closes every
 * gateway and removes every folder made through the harness, in that order, even on failure.
 */
export function usePostgres(): PgHarness {
  const clusters: PgCluster[] = [];
  const gateways: TestGateway[] = [];
  const dirs: string[] = [];

  afterEach(async () => {
    await Promise.all(clusters.splice(0).map((c) => c.stop('immediate').catch(() => undefined)));
    await Promise.all(gateways.splice(0).map((g) => g.close().catch(() => undefined)));
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  const pgDir = async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kgpg-'));
    dirs.push(dir);
    if (IS_ROOT) {
      const uid = Number((await mustRun('id', ['-u', PG_OS_USER])).trim());
      const gid = Number((await mustRun('id', ['-g', PG_OS_USER])).trim());
      await chown(dir, uid, gid);
    }
    await chmod(dir, 0o700);
    return dir;
  };

  const makeCluster = async (dataDir: string, logFile: string): Promise<PgCluster> => {
    const bin = await pgBinDir();
    let port = await freePort();
    const cluster: PgCluster = {
      dataDir,
      get port() {
        return port;
      },
      logFile,
      configure: async (settings) => {
        const lines = Object.entries(settings).map(([k, v]) => `${k} = ${confValue(v)}\n`);
        // Appended as the server's user would, so the file keeps its owner.
        await appendFile(join(dataDir, 'postgresql.conf'), `\n# kmsgw test harness\n${lines.join('')}`);
      },
      tryStart: async () => {
        const pgCtlStart = () =>
          runAsPg(join(bin, 'pg_ctl'), ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '90'], { cwd: dataDir, timeout: 120_000 });
        let r = await pgCtlStart();
        // The free port was taken in between: once more, on another.
        if (r.code !== 0 && /could not bind IPv4 address "127\.0\.0\.1": Address already in use/.test(await cluster.log())) {
          port = await freePort();
          await cluster.configure({ port });
          r = await pgCtlStart();
        }
        return { ok: r.code === 0, output: r.stdout + r.stderr };
      },
      start: async () => {
        const r = await cluster.tryStart();
        if (!r.ok)
          throw new Error(
            `PostgreSQL did not start (port ${port}):\n${r.output}\n--- server log (tail) ---\n${tail(await cluster.log(), 40)}`,
          );
      },
      stop: async (mode = 'fast') => {
        if (!existsSync(join(dataDir, 'postmaster.pid'))) return;
        await runAsPg(join(bin, 'pg_ctl'), ['stop', '-D', dataDir, '-m', mode, '-w', '-t', '60'], { cwd: dataDir, timeout: 90_000 });
      },
      sql: async (query, conn = {}) => {
        const conninfo = Object.entries({
          host: '127.0.0.1',
          port: String(port),
          user: 'postgres',
          dbname: 'postgres',
          connect_timeout: '10',
          ...conn,
        })
          .map(([k, v]) => `${k}=${v}`)
          .join(' ');
        const r = await run(join(bin, 'psql'), ['-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1', '-d', conninfo, '-c', query], {
          env: { PATH: SERVER_ENV['PATH'], LC_ALL: 'C' },
          timeout: 60_000,
        });
        if (r.code !== 0) throw new Error(`psql failed (${r.code}) on: ${query}\n${r.stderr}`);
        return r.stdout.trim();
      },
      log: async () => readFile(logFile, 'utf8').catch(() => ''),
    };
    await cluster.configure({ port, listen_addresses: '127.0.0.1', unix_socket_directories: '' });
    clusters.push(cluster);
    return cluster;
  };

  return {
    pgDir,
    initCluster: async ({ initdbArgs = [], settings = {} } = {}) => {
      await pgPreflight();
      const bin = await pgBinDir();
      const dir = await pgDir();
      const dataDir = join(dir, 'data');
      await mustRunAsPg(
        join(bin, 'initdb'),
        ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync', '--no-instructions', ...initdbArgs],
        { cwd: dir },
      );
      const cluster = await makeCluster(dataDir, join(dir, 'server.log'));
      // Test clusters: small, and no fsync (they are thrown away).
      await cluster.configure({ fsync: false, shared_buffers: '16MB', max_connections: 20, ...settings });
      return cluster;
    },
    adoptCluster: async (dataDir, settings = {}) => {
      await pgPreflight();
      const cluster = await makeCluster(dataDir, join(resolve(dataDir, '..'), `server-${Date.now()}.log`));
      await cluster.configure(settings);
      return cluster;
    },
    startGateway: async (overrides = {}) => {
      // Not a pgDir: root-owned, mode 0711 so the server's user can reach the socket (mode 0666)
      // but not list the folder; the gateway's key store below it stays 0700.
      const dir = await mkdtemp(join(tmpdir(), 'kg-'));
      dirs.push(dir);
      await chmod(dir, 0o711);
      const gw = await startTestGateway(dir, { listen: { socket: { path: join(dir, 'gw.sock'), mode: '0666' } }, ...overrides });
      gateways.push(gw);
      return gw;
    },
  };
}

/** Runs a server-side tool (pg_basebackup, ...) from the PostgreSQL 15 bindir as the server's OS user. */
export async function pgTool(name: string, args: readonly string[], cwd: string): Promise<string> {
  return mustRunAsPg(join(await pgBinDir(), name), args, { cwd, timeout: 180_000 });
}

/**
 * Takes a base backup of `primary` into `into` with `pg_basebackup`, leaving the WAL to the
 * archive (`-X none`), after a fast checkpoint; run from `cwd`.
 */
export function baseBackup(primary: PgCluster, into: string, cwd: string): Promise<string> {
  return pgTool(
    'pg_basebackup',
    ['-D', into, '-X', 'none', '-c', 'fast', '-h', '127.0.0.1', '-p', String(primary.port), '-U', 'postgres'],
    cwd,
  );
}

/** Polls `check` until it returns a value, or throws after `timeoutMs` with `describe()`'s text. */
export async function waitFor<T>(check: () => Promise<T | undefined>, timeoutMs: number, describe: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${await describe()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function tail(text: string, lines: number): string {
  return text
    .split('\n')
    .slice(-lines - 1)
    .join('\n');
}

/** Waits until the archiver has archived `segment` (or a later one); fails fast, with the log, when it keeps failing. */
export async function waitArchived(primary: PgCluster, segment: string, timeoutMs = 120_000): Promise<void> {
  await waitFor(
    async () => {
      const [archived = '', failed = '0'] = (
        await primary.sql("select coalesce(last_archived_wal, ''), failed_count from pg_stat_archiver")
      ).split('|');
      if (archived >= segment) return true;
      if (Number(failed) >= 3) throw new Error(`archive_command keeps failing (${failed} times):\n${tail(await primary.log(), 30)}`);
      return undefined;
    },
    timeoutMs,
    async () =>
      `segment ${segment} not archived; pg_stat_archiver: ${await primary.sql('select * from pg_stat_archiver')}\n${tail(await primary.log(), 30)}`,
  );
}
