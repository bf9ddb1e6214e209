import type { Stats } from 'node:fs';
import { defaultKeks } from '../keys/kek-order.js';
import { stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { kekScheme } from '../../adapters/registry.js';
import { localKekPath } from '../../adapters/local/index.js';
import type { Config } from '../config/schema.js';

/** A folder or KEK file that others could change or read; start-up stops with this. */
export class PermissionError extends Error {
  override readonly name = 'PermissionError';
  readonly code = 'PERMISSIONS' as const;
}

/** For tests: whose files count as the gateway's own. */
export interface CheckOptions {
  /** @default process.geteuid() (the checks are skipped where there is none) */
  readonly uid?: number;
}

/**
 * Checks, before anything is opened, that what the gateway is about to adopt belongs to
 * it: the data folder, the socket's folder and (when the default KEK is `local://`) the
 * local KEK file. Owned by this uid or root; folders not writable by group or others; the
 * KEK readable by nobody else. Only these themselves are checked, not their parents, so a
 * data folder inside /tmp is fine while /tmp itself is not. What does not exist yet is
 * skipped: the gateway creates it 0700 (files 0600). Throws one `PermissionError` listing
 * every problem with its fix.
 */
export async function checkStartupPermissions(config: Config, baseDir: string, options: CheckOptions = {}): Promise<void> {
  const uid = options.uid ?? process.geteuid?.();
  if (uid === undefined) return;
  const dataDir = resolve(baseDir, config.dataDir);
  const folders = new Map([[dataDir, DATA_DIR]]);
  if (config.listen.socket) {
    const socketDir = dirname(resolve(baseDir, config.listen.socket.path));
    if (!folders.has(socketDir)) folders.set(socketDir, 'socket folder (listen.socket.path)');
  }
  const keks = defaultKeks(config.keys.defaultKek)
    .filter((kek) => kekScheme(kek) === 'local')
    .map((kek) => localKekPath(kek, dataDir));
  for (const kek of keks) if (!folders.has(dirname(kek))) folders.set(dirname(kek), 'local KEK folder (keys.defaultKek)');

  const problems: string[] = [];
  for (const [path, what] of folders) problems.push(...folderProblems(path, what, await statIfThere(path), uid));
  for (const kek of keks) problems.push(...kekProblems(kek, await statIfThere(kek), uid));
  if (problems.length > 0) throw new PermissionError(`refusing to start: ${problems.join('; ')}`);
}

async function statIfThere(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

const DATA_DIR = 'data folder (dataDir)';

const octal = (mode: number) => `0${(mode & 0o7777).toString(8)}`;

/** Root's files are fine: root can change anything the gateway uses anyway. */
function ownerProblem(path: string, what: string, st: Stats, uid: number): string[] {
  if (st.uid === uid || st.uid === 0) return [];
  return [
    `${what} ${path} is owned by uid ${st.uid}, not by this gateway's uid ${uid}, who could change it: chown ${uid} ${path} (after checking its contents), or remove it and let the gateway create it`,
  ];
}

function folderProblems(path: string, what: string, st: Stats | undefined, uid: number): string[] {
  if (st === undefined) return [];
  if (!st.isDirectory()) return [`${what} ${path} is not a folder`];
  const problems = ownerProblem(path, what, st, uid);
  const writers = [st.mode & 0o020 ? 'group' : '', st.mode & 0o002 ? 'others' : ''].filter(Boolean).join(' and ');
  if (writers !== '') {
    // A shared folder like /tmp (sticky, world-writable) lets others plant names in it; chmod is no fix there.
    const chmod = what === DATA_DIR ? 'chmod 700' : 'chmod go-w';
    const fix = st.mode & 0o1000 ? 'give it a folder of its own (e.g. under /var/lib or /run)' : `${chmod} ${path}`;
    problems.push(`${what} ${path} is writable by ${writers} (mode ${octal(st.mode)}), who could replace what is in it: ${fix}`);
  }
  return problems;
}

function kekProblems(path: string, st: Stats | undefined, uid: number): string[] {
  const what = 'local KEK file (keys.defaultKek)';
  if (st === undefined) return [];
  if (!st.isFile()) return [`${what} ${path} is not a regular file`];
  const problems = ownerProblem(path, what, st, uid);
  if (st.mode & 0o077) {
    problems.push(
      `${what} ${path} is open to group or others (mode ${octal(st.mode)}): chmod 600 ${path} (if others may have read it, treat that KEK as exposed and REWRAP keys under a new one)`,
    );
  }
  return problems;
}
