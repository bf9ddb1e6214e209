import { Command, CommanderError, Option } from 'commander';
import { createReadStream, existsSync } from 'node:fs';
import { open, rename, unlink, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createClient, defaultSocketPath, KmsgwError, type KmsgwClient } from '../client/index.js';
import { decryptStream, encryptStream, type ByteSink } from './stream.js';

// Client commands are what PostgreSQL hooks run, once per call: keep their start-up
// short by loading the server, config and logging code only for serve and init.
const DEFAULT_CONFIG_FILE = 'kmsgw.yaml';

/** Exit statuses: 0 success, 1 the gateway said ERR (or was unreachable), 2 usage error. */
const EXIT_ERR = 1;
const EXIT_USAGE = 2;
/**
 * `dec --restore`: any failure but a missing input file. PostgreSQL reads a
 * restore_command status above 125 as fatal and stops recovery; 1 would mean
 * "not in the archive" and end recovery early, silently, on tampering or an outage.
 */
const EXIT_RESTORE_FATAL = 255;

class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** The command printed its own verdict; only the exit status (1) is left to give. */
class AlreadyReported extends Error {
  override readonly name = 'AlreadyReported';
}

/** A failure that must stop PostgreSQL's recovery (see EXIT_RESTORE_FATAL). */
class FatalForRestore extends Error {
  override readonly name = 'FatalForRestore';
}

/** The one line a failure prints, without repeating a Node error code already in the message. */
function describeError(err: unknown): string {
  if (err instanceof KmsgwError) return `${err.code} ${err.message}`;
  const e = err as NodeJS.ErrnoException;
  const message = e?.message ?? String(err);
  if (e?.code === 'ENOENT' && typeof e.path === 'string') return `NOT_FOUND no such file ${e.path}`;
  return e?.code && !message.startsWith(e.code) ? `${e.code} ${message}` : message;
}

interface ClientFlags {
  socket?: string;
  timeout: string;
}

async function withClient<T>(flags: ClientFlags, fn: (c: KmsgwClient) => Promise<T>): Promise<T> {
  const timeoutMs = Number(flags.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 0) throw new UsageError('--timeout must be a whole number of ms');
  const client = await createClient({ socketPath: flags.socket ?? defaultSocketPath(), timeoutMs });
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

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

function clientOptions(cmd: Command): Command {
  return cmd
    .option('--socket <path>', 'gateway socket (default: $KMSGW_SOCKET, else .kmsgw/kmsgw.sock)')
    .option('--timeout <ms>', 'give up after this many ms without a reply', '10000');
}

export function buildProgram(): Command {
  const program = new Command('kmsgw')
    .description('Gateway that serves data-encryption keys wrapped by a cloud KMS')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();

  program
    .command('serve')
    .description('run the gateway (embedded development default when no config is found)')
    .option('-c, --config <file>', `config file (default: $KMSGW_CONFIG, else ./${DEFAULT_CONFIG_FILE} if present)`)
    .action(async (opts: { config?: string }) => {
      const { loadConfig } = await import('../config/load.js');
      const { startGateway } = await import('../serve.js');
      const loaded = await loadConfig(opts.config);
      const running = await startGateway(loaded.config, { baseDir: loaded.baseDir });
      running.log.info({ config: loaded.file ?? 'embedded development default' }, 'configuration loaded');
      await new Promise<void>((done) => {
        const stop = (signal: string) => {
          running.log.info({ signal }, 'shutting down');
          void running.close().then(done);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });

  program
    .command('init')
    .description(`write a commented ./${DEFAULT_CONFIG_FILE} and the local development KEK`)
    .option('--force', 'overwrite an existing config file (never the KEK)')
    .action(async (opts: { force?: boolean }) => {
      const { loadConfig } = await import('../config/load.js');
      const { ensureLocalKek, localKekPath } = await import('../../adapters/local/index.js');
      const { EXAMPLE_CONFIG } = await import('./example-config.js');
      const path = resolve(DEFAULT_CONFIG_FILE);
      try {
        await writeFile(path, EXAMPLE_CONFIG, { flag: opts.force ? 'w' : 'wx', mode: 0o600 });
        process.stdout.write(`wrote ${path}\n`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        process.stdout.write(`${path} exists; left as it is (use --force to overwrite)\n`);
      }
      const { config, baseDir } = await loadConfig(path);
      const kekPath = localKekPath('local://local-kek', resolve(baseDir, config.dataDir));
      const made = await ensureLocalKek(kekPath);
      process.stdout.write(`${made ? 'created' : 'kept existing'} local KEK ${kekPath} (mode 0600)\n`);
    });

  program
    .command('audit')
    .description('work with the audit log')
    .command('verify <file>')
    .description('check an audit log\'s hash chain; exit 0 when intact, 1 naming the first line altered, removed, inserted or reordered')
    .action(async (file: string) => {
      const { verifyAuditFile, describeResult } = await import('../audit/verify.js');
      const result = await verifyAuditFile(file);
      if (!result.ok) throw new Error(`${file}: ${describeResult(result)}`);
      process.stdout.write(`${describeResult(result)}\n`);
    });

  const policy = program.command('policy').description('inspect the access policy (reads the config; no gateway needed)');
  policy
    .command('check <client> <verb> <key-id>')
    .description('explain whether CLIENT may use VERB on KEY-ID under the configured policy; exit 0 allowed, 1 denied')
    .option('-c, --config <file>', `config file (default: $KMSGW_CONFIG, else ./${DEFAULT_CONFIG_FILE} if present)`)
    .action(async (client: string, verbText: string, keyId: string, opts: { config?: string }) => {
      const { loadConfig } = await import('../config/load.js');
      const { Policy } = await import('../policy/policy.js');
      const verb = verbText.toUpperCase();
      const verbs = ['GET', 'ENC', 'DEC', 'CREATE', 'ROTATE', 'REWRAP', 'DESTROY', 'INFO', 'LIST', 'PING', 'AUTH'];
      if (!verbs.includes(verb)) throw new UsageError(`verb must be one of ${verbs.join(' ')}`);
      const { config, file } = await loadConfig(opts.config);
      if (!config.policy) {
        process.stdout.write(`allowed: ${file ?? 'the embedded default'} has no policy, so every client may do everything\n`);
        return;
      }
      const decision = new Policy(config.policy).explain(client, verb as never, keyId);
      process.stdout.write(`${decision.allowed ? 'allowed' : 'denied'}: ${decision.reason}\n`);
      if (!decision.allowed) throw new AlreadyReported('denied');
    });
  policy
    .command('hash-token')
    .description('read a bearer token on stdin and print the sha256:<hex> form the config stores')
    .action(async () => {
      const { hashToken } = await import('../policy/policy.js');
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      const token = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
      if (token.length === 0) throw new UsageError('no token on stdin');
      process.stdout.write(`${hashToken(token)}\n`);
    });

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
            verb === 'enc' ? encryptStream(c, keyId, inputStream(opts.in), sink, aad) : decryptStream(c, keyId, inputStream(opts.in), sink, aad),
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
  clientOptions(key.command('create <key-id>').description('create a key (version 1)').option('--kek <uri>', 'KEK URI (default: the gateway\'s keys.defaultKek)')).action(
    async (id: string, opts: ClientFlags & { kek?: string }) => {
      process.stdout.write(`${await withClient(opts, (c) => c.create(id, opts.kek))}\n`);
    },
  );
  clientOptions(key.command('rotate <key-id>').description('add a new DEK version, used by ENC from now on').option('--kek <uri>', 'KEK URI for the new version (default: as the newest)')).action(
    async (id: string, opts: ClientFlags & { kek?: string }) => {
      process.stdout.write(`${await withClient(opts, (c) => c.rotate(id, opts.kek))}\n`);
    },
  );
  clientOptions(
    key
      .command('rewrap <key-id>')
      .description('move every enabled version (or key-id@version) under another KEK')
      .requiredOption('--kek <uri>', 'the new KEK URI'),
  ).action(async (id: string, opts: ClientFlags & { kek: string }) => {
    process.stdout.write(`${await withClient(opts, (c) => c.rewrap(id, opts.kek))}\n`);
  });
  clientOptions(key.command('destroy <key-id@version>').description('destroy one old DEK version for good')).action(async (ref: string, opts: ClientFlags) => {
    const m = /^(.+)@(\d+)$/.exec(ref);
    if (!m) throw new UsageError('destroy takes key-id@version');
    process.stdout.write(`${await withClient(opts, (c) => c.destroy(m[1] as string, Number(m[2])))}\n`);
  });
  clientOptions(key.command('info <key-id>').description('show versions, KEKs and states (never key material)')).action(async (id: string, opts: ClientFlags) => {
    printJson(await withClient(opts, (c) => c.info(id)));
  });
  clientOptions(key.command('list [prefix]').description('list key ids')).action(async (prefix: string | undefined, opts: ClientFlags) => {
    for (const id of await withClient(opts, (c) => c.list(prefix))) process.stdout.write(`${id}\n`);
  });

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
