// Running the built CLI as a user would: a child process on this Node, output collected.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { beforeAll } from 'vitest';

const BIN = resolve(import.meta.dirname, '../../bin/kmsgw.js');

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI (no config unless the test gives one), with `input` on its standard input when given. */
export function kmsgw(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; input?: Uint8Array } = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: opts.cwd ?? process.cwd(),
      env: { ...process.env, KMSGW_CONFIG: '', ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    // No input is an empty standard input, as before.
    child.stdin.end(opts.input);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

/** Fails the file at once, with the fix, when the CLI has not been built. */
export function requireBuiltCli(): void {
  beforeAll(() => {
    if (!existsSync(resolve(import.meta.dirname, '../../dist/src/cli/main.js'))) {
      throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
    }
  });
}
