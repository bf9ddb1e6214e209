import { Command, Option } from 'commander';
import { createReadStream, existsSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { clientOptions, withClient, type ClientFlags } from './client-flags.js';
import { describeError, FatalForRestore, UsageError } from './errors.js';
import { addKekCommands } from './kek-commands.js';
import { decryptStream, encryptStream, type ByteSink } from './stream.js';

/** The input bytes: a file read in 64 KiB pieces, or stdin. */
function inputStream(path: string | undefined): AsyncIterable<Uint8Array> {
  return path !== undefined && path !== '-' ? createReadStream(path, { highWaterMark: 64 * 1024 }) : process.stdin;
}

/** Writes to stdout, honouring backpressure. */
const stdoutSink: ByteSink = {
  write: (bytes) => new Promise<void>((ok, fail) => process.stdout.write(bytes, (err) => (err ? fail(err) : ok()))),
};

/**
 * Runs `produce` into `path` all or nothing: a temporary file, fsynced and renamed
 * only on success, so an `-o` path never holds a partial or unauthenticated result.
 */
async function toFileAtomically(path: string, produce: (sink: ByteSink) => Promise<void>): Promise<void> {
  const tmp = `${path}.kmsgw-${process.pid}.tmp`;
  const handle = await open(tmp, 'wx', 0o600);
  try {
    await produce({ write: async (bytes) => void (await handle.write(bytes)) });
    await handle.sync();
    await handle.close();
    await rename(tmp, path);
  } catch (err) {
    await handle.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

async function toOutput(path: string | undefined, produce: (sink: ByteSink) => Promise<void>): Promise<void> {
  if (path === undefined || path === '-') await produce(stdoutSink);
  else await toFileAtomically(path, produce);
}

/** The commands that talk to a running gateway: what PostgreSQL hooks and operators run. */
export function addClientCommands(program: Command): void {
  clientOptions(program.command('ping').description('check that the gateway answers')).action(async (opts: ClientFlags) => {
    await withClient(opts, (c) => c.ping());
    process.stdout.write('PONG\n');
  });

  clientOptions(
    program
      .command('get <key-id>')
      .description('print a DEK (key-id[@version]; newest version by default)')
      .addOption(new Option('-f, --format <format>', 'output encoding').choices(['hex', 'base64', 'raw']).default('base64'))
      .option('--prompt <text>', "ignored: lets ssl_passphrase_command pass --prompt '%p'"),
  ).action(async (keyId: string, opts: ClientFlags & { format: 'hex' | 'base64' | 'raw' }) => {
    const dek = await withClient(opts, (c) => c.get(keyId));
    try {
      if (opts.format === 'raw') await stdoutSink.write(dek);
      else process.stdout.write(`${dek.toString(opts.format)}\n`);
    } finally {
      dek.fill(0);
    }
  });

  for (const verb of ['enc', 'dec'] as const) {
    clientOptions(
      program
        .command(`${verb} <key-id>`)
        .description(
          verb === 'enc'
            ? 'encrypt stdin (or -i) into a kmsgw stream on stdout (or -o); any size'
            : 'decrypt a kmsgw stream from stdin (or -i) to stdout (or -o); refuses truncated, reordered or tampered streams',
        )
        .option('--aad <text>', 'associated data (UTF-8) bound to every chunk, e.g. a WAL file name')
        .option('-i, --in <file>', 'read from FILE instead of stdin')
        .option('-o, --out <file>', 'write to FILE, all or nothing, instead of stdout')
        .option(
          '--restore',
          verb === 'dec'
            ? 'as PostgreSQL restore_command: exit 1 only when the input file is missing, 255 (stop recovery) on any other failure'
            : 'accepted for symmetry; no effect on enc',
        ),
    ).action(async (keyId: string, opts: ClientFlags & { aad?: string; in?: string; out?: string; restore?: boolean }) => {
      const aad = opts.aad === undefined ? undefined : Buffer.from(opts.aad, 'utf8');
      if (aad?.length === 0) throw new UsageError('--aad must not be empty');
      if (verb === 'dec' && opts.restore && opts.in === undefined) throw new UsageError('--restore needs -i FILE');
      if (verb === 'dec' && opts.restore && opts.in !== undefined && !existsSync(opts.in)) {
        // The archive does not have it: a normal answer to PostgreSQL, which asks for files that may not exist.
        throw Object.assign(new Error(`no such file ${opts.in}`), { code: 'ENOENT', path: opts.in });
      }
      try {
        await withClient(opts, (c) =>
          toOutput(opts.out, (sink) =>
            verb === 'enc'
              ? encryptStream(c, keyId, inputStream(opts.in), sink, aad)
              : decryptStream(c, keyId, inputStream(opts.in), sink, aad),
          ),
        );
      } catch (err) {
        if (verb === 'dec' && opts.restore) throw new FatalForRestore(describeError(err), { cause: err });
        throw err;
      }
    });
  }

  const key = program.command('key').description('administer keys');
  const printJson = (value: unknown) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  clientOptions(
    key
      .command('create <key-id>')
      .description('create a key (version 1)')
      .option(
        '--kek <uri[,uri...]>',
        "KEK URI, or several comma-separated: each DEK is wrapped under every one (default: the gateway's keys.defaultKek)",
      ),
  ).action(async (id: string, opts: ClientFlags & { kek?: string }) => {
    process.stdout.write(`${await withClient(opts, (c) => c.create(id, opts.kek))}\n`);
  });
  clientOptions(
    key
      .command('rotate <key-id>')
      .description('add a new DEK version, used by ENC from now on')
      .option('--kek <uri[,uri...]>', 'KEK URI(s) for the new version (default: as the newest)'),
  ).action(async (id: string, opts: ClientFlags & { kek?: string }) => {
    process.stdout.write(`${await withClient(opts, (c) => c.rotate(id, opts.kek))}\n`);
  });
  clientOptions(
    key
      .command('rewrap <key-id>')
      .description('wrap every enabled version (or key-id@version) under exactly these KEKs')
      .requiredOption('--kek <uri[,uri...]>', 'the new KEK URI(s)'),
  ).action(async (id: string, opts: ClientFlags & { kek: string }) => {
    process.stdout.write(`${await withClient(opts, (c) => c.rewrap(id, opts.kek))}\n`);
  });
  clientOptions(key.command('destroy <key-id@version>').description('destroy one old DEK version for good')).action(
    async (ref: string, opts: ClientFlags) => {
      const m = /^(.+)@(\d+)$/.exec(ref);
      if (!m) throw new UsageError('destroy takes key-id@version');
      process.stdout.write(`${await withClient(opts, (c) => c.destroy(m[1] as string, Number(m[2])))}\n`);
    },
  );
  clientOptions(key.command('info <key-id>').description('show versions, KEKs and states (never key material)')).action(
    async (id: string, opts: ClientFlags) => {
      printJson(await withClient(opts, (c) => c.info(id)));
    },
  );
  addKekCommands(key, printJson);
  clientOptions(key.command('list [prefix]').description('list key ids')).action(async (prefix: string | undefined, opts: ClientFlags) => {
    for (const id of await withClient(opts, (c) => c.list(prefix))) process.stdout.write(`${id}\n`);
  });
}
