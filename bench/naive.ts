import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from 'node:net';

/** The naive peer: bench/naive/server.py, one Python asyncio process (the baseline the issue measured against). */
export interface NaiveServer {
  readonly name: 'naive';
  readonly socketPath: string;
  readonly python: string;
  cpu(): Promise<number>;
  stop(): Promise<void>;
}

const SCRIPT = fileURLToPath(new URL('../../bench/naive/server.py', import.meta.url));

/** A Python 3 with `cryptography`: $KMSGW_BENCH_PYTHON, else python3, else LocalStack's venv (which has it). */
function findPython(repoDir: string): string {
  const candidates = [process.env['KMSGW_BENCH_PYTHON'], 'python3', join(repoDir, '.cache', 'localstack', 'venv', 'bin', 'python')];
  for (const python of candidates) {
    if (python === undefined || python === '') continue;
    const r = spawnSync(python, ['-c', 'import cryptography'], { stdio: 'ignore' });
    if (r.status === 0) return python;
  }
  throw new Error('the naive baseline needs Python 3 with `cryptography` (pip install cryptography, or set KMSGW_BENCH_PYTHON)');
}

/** CPU time (user + system) of a process so far, in µs, from /proc. */
function cpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  // utime and stime are fields 14 and 15 of stat; after "pid (comm) " they are at 11 and 12.
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
}

export async function startNaive(tmpRoot: string, repoDir: string, track: (c: ChildProcess) => void): Promise<NaiveServer> {
  const python = findPython(repoDir);
  const socketPath = join(tmpRoot, 'naive.sock');
  const child = spawn(python, [SCRIPT, socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  track(child);
  await new Promise<void>((ready, fail) => {
    child.stdout.once('data', () => ready());
    child.once('exit', (code) => fail(new Error(`naive server exited (${code})`)));
  });
  return {
    name: 'naive',
    socketPath,
    python,
    cpu: () => Promise.resolve(cpuUs(child.pid as number)),
    stop: () =>
      new Promise<void>((done) => {
        if (child.exitCode !== null || child.signalCode !== null) return done();
        child.once('exit', () => done());
        child.kill('SIGTERM');
      }),
  };
}

/** Sends one line and resolves with the reply line (setting up a DEC request per server). */
export function askOnce(socketPath: string, line: string): Promise<string> {
  return new Promise((done, fail) => {
    const s = connect(socketPath);
    let buf = '';
    s.on('data', (c) => {
      buf += c.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl !== -1) {
        s.end();
        done(buf.slice(0, nl));
      }
    });
    s.on('error', fail);
    s.write(`${line}\n`);
  });
}
