// The real `age` and `age-keygen` (Debian package `age`, installed by .ci/run): the recovery tests check
// kmsgw against them, so a missing binary fails those tests with the fix instead of skipping them.
import { execFile, spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeEach } from 'vitest';

const run = promisify(execFile);

/**
 * Fails every test of the file (each one, not skipped as a failed beforeAll would leave them) when
 * `age` or `age-keygen` is not on PATH. The tools are looked for once.
 */
export function requireAgeTools(): void {
  let found: Promise<void> | undefined;
  beforeEach(async () => {
    found ??= (async () => {
      for (const tool of ['age', 'age-keygen']) {
        try {
          await run(tool, ['--version']);
        } catch (err) {
          throw new Error(`${tool} is not installed (Debian: apt-get install age; .ci/run installs it)`, { cause: err });
        }
      }
    })();
    await found;
  });
}

/** A fresh identity from `age-keygen`, written to `<dir>/<name>`: its file, recipient and secret line. */
export async function ageKeygen(dir: string, name = 'identity.txt'): Promise<{ file: string; recipient: string; secret: string }> {
  const file = join(dir, name);
  const { stdout } = await run('age-keygen', []);
  await writeFile(file, stdout, { mode: 0o600 });
  const recipient = /^# public key: (age1\S+)$/m.exec(stdout)?.[1];
  const secret = /^(AGE-SECRET-KEY-1\S+)$/m.exec(stdout)?.[1];
  if (recipient === undefined || secret === undefined) throw new Error('unexpected age-keygen output');
  return { file, recipient, secret };
}

/** Runs `age` with `input` on stdin; resolves with its stdout bytes, rejects with its stderr. */
export function age(args: string[], input: Uint8Array | string): Promise<Buffer> {
  return new Promise((done, fail) => {
    const child = spawn('age', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', fail);
    child.on('close', (code) => (code === 0 ? done(Buffer.concat(out)) : fail(new Error(`age ${args.join(' ')} exited ${code}: ${err}`))));
    child.stdin.end(input);
  });
}
