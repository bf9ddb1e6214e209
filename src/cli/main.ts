import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { addClientCommands } from './client-commands.js';
import { AlreadyReported, describeError, EXIT_ERR, EXIT_RESTORE_FATAL, EXIT_USAGE, FatalForRestore, UsageError } from './errors.js';
import { addRecoverCommand } from './recover-command.js';
import { addServerCommands } from './server-commands.js';
import { addStoreCommands } from './store-commands.js';

/** The package's version, from the nearest package.json above this module (src/cli/ or dist/src/cli/). */
function packageVersion(): string {
  for (let dir = new URL('.', import.meta.url); dir.pathname !== '/'; dir = new URL('..', dir)) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'kmsgw' && pkg.version) return pkg.version;
    } catch {
      // none here: look one folder up
    }
  }
  return 'unknown';
}

export function buildProgram(): Command {
  const program = new Command('kmsgw')
    .description('Gateway that serves data-encryption keys wrapped by a cloud KMS')
    .version(packageVersion())
    .showHelpAfterError()
    .exitOverride();
  addServerCommands(program);
  addClientCommands(program);
  addStoreCommands(program);
  addRecoverCommand(program);
  return program;
}

export async function main(argv: readonly string[]): Promise<number> {
  try {
    await buildProgram().parseAsync([...argv], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`kmsgw: ${err.message}\n`);
      return EXIT_USAGE;
    }
    if (err instanceof AlreadyReported) return EXIT_ERR;
    if (err instanceof FatalForRestore) {
      process.stderr.write(`kmsgw: ${err.message} (recovery must stop)\n`);
      return EXIT_RESTORE_FATAL;
    }
    process.stderr.write(`kmsgw: ${describeError(err)}\n`);
    return EXIT_ERR;
  }
}
