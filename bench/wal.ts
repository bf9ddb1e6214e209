/**
 * A 16 MiB WAL segment through the real CLI (`kmsgw enc` / `kmsgw dec`, whole process, wall time)
 * against `openssl enc -aes-256-ctr` on the same file, alternating, median of the rounds; and the
 * CLI's start-up (`kmsgw ping`) against `node -e 0`.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { median } from './common.js';

export interface WalResult {
  readonly bytes: number;
  readonly encS: number[];
  readonly decS: number[];
  readonly opensslS: number[];
  readonly pingS: number[];
  readonly nodeS: number[];
}

function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const s = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.toString()}`);
  return s;
}

export function runWalBench(repoDir: string, tmpRoot: string, socketPath: string, rounds: number): WalResult {
  const bytes = 16 * 1024 * 1024;
  const input = join(tmpRoot, '000000010000000000000001');
  writeFileSync(input, randomBytes(bytes));
  const bin = join(repoDir, 'bin', 'kmsgw.js');
  const env = { ...process.env, KMSGW_SOCKET: socketPath };
  const node = process.execPath;
  const enc = join(tmpRoot, 'wal.enc');
  const dec = join(tmpRoot, 'wal.dec');
  const ctr = join(tmpRoot, 'wal.ctr');
  const key = randomBytes(32).toString('hex');
  const iv = randomBytes(16).toString('hex');
  const result: WalResult = { bytes, encS: [], decS: [], opensslS: [], pingS: [], nodeS: [] };
  const aad = ['--aad', '000000010000000000000001'];
  // One of each first: the compile cache and the page cache, as on a busy archiver.
  timed(node, [bin, 'enc', 'pg/wal', ...aad, '-i', input, '-o', enc], env);
  for (let round = 0; round < rounds; round++) {
    result.encS.push(timed(node, [bin, 'enc', 'pg/wal', ...aad, '-i', input, '-o', enc], env));
    result.decS.push(timed(node, [bin, 'dec', 'pg/wal', ...aad, '-i', enc, '-o', dec], env));
    result.opensslS.push(timed('openssl', ['enc', '-aes-256-ctr', '-K', key, '-iv', iv, '-in', input, '-out', ctr], env));
    result.pingS.push(timed(node, [bin, 'ping'], env));
    result.nodeS.push(timed(node, ['-e', '0'], env));
  }
  if (!readFileSync(dec).equals(readFileSync(input))) throw new Error('kmsgw dec did not give back the WAL segment');
  return result;
}

type Verdict = { workload: string; target: string; pass: boolean | undefined };

export function walReport(w: WalResult): { lines: string[]; verdicts: Verdict[] } {
  const mb = w.bytes / 1e6;
  const ssl = median(w.opensslS);
  const verdicts: Verdict[] = [];
  const ms = (v: number) => `${(v * 1000).toFixed(0)} ms`;
  const row = (label: string, times: number[], target: string, pass: boolean | undefined) => {
    if (pass !== undefined) verdicts.push({ workload: label, target, pass });
    const t = median(times);
    return `| ${label} | ${ms(t)} (${ms(Math.min(...times))}–${ms(Math.max(...times))}) | ${(mb / t).toFixed(0)} MB/s | **${(t / ssl).toFixed(1)}x** | ${target} | ${pass === undefined ? '' : pass ? 'PASS' : '**MISS**'} |`;
  };
  const enc = median(w.encS);
  const lines = [
    `### A ${(w.bytes / 1024 / 1024).toFixed(0)} MiB WAL segment through the CLI (whole process, wall time, median of ${w.encS.length})`,
    '',
    '| Command | Time | Throughput | ÷ openssl | Target | |',
    '|---|---:|---:|---:|---|---|',
    row('`kmsgw enc pg/wal --aad <name> -i seg -o out`', w.encS, '≤ 3x openssl', enc / ssl <= 3),
    row('`kmsgw dec pg/wal --aad <name> -i out -o seg`', w.decS, '≤ 3x openssl', median(w.decS) / ssl <= 3),
    row('`openssl enc -aes-256-ctr` (baseline)', w.opensslS, '—', undefined),
    `| \`kmsgw ping\` (CLI start-up and one round trip) | ${ms(median(w.pingS))} | | | \`node -e 0\`: ${ms(median(w.nodeS))} | |`,
    '',
    `For PostgreSQL: one \`archive_command\` running \`kmsgw enc\` archives about ${(mb / enc).toFixed(0)} MB/s of WAL ` +
      `(${(1 / enc).toFixed(1)} segments a second).`,
  ];
  return { lines, verdicts };
}
