import type { Command } from 'commander';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DEFAULT_CONFIG_FILE } from '../config/defaults.js';
import { VERBS, type Verb } from '../protocol/parser.js';
import { AlreadyReported, UsageError } from './errors.js';

/** Shortest token `policy hash-token` accepts: failed AUTH is limited per connection, not per address. */
const MIN_TOKEN_LENGTH = 32;

/**
 * Commands that run the gateway or read its config. They load the server,
 * config and logging code only when run, so client commands start fast.
 */
export function addServerCommands(program: Command): void {
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
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) {
            // A second signal: the operator will not wait for the drain. Zeroize, then go.
            running.log.warn({ signal }, 'second signal: exiting without waiting for requests in flight');
            running.cache.clear();
            process.exit(1);
          }
          stopping = true;
          running.log.info({ signal, graceMs: loaded.config.limits.shutdownGraceMs }, 'shutting down: answering requests already read');
          void running.close().then(done);
        };
        process.on('SIGINT', stop);
        process.on('SIGTERM', stop);
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
    .description("check an audit log's hash chain; exit 0 when intact, 1 naming the first line altered, removed, inserted or reordered")
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
    .option('--kek <uri>', 'the KEK URI a CREATE, ROTATE or REWRAP would name')
    .action(async (client: string, verbText: string, keyId: string, opts: { config?: string; kek?: string }) => {
      const { loadConfig } = await import('../config/load.js');
      const { Policy } = await import('../policy/policy.js');
      const verb = verbText.toUpperCase();
      if (!isVerb(verb)) throw new UsageError(`verb must be one of ${VERBS.join(' ')}`);
      const { config, file } = await loadConfig(opts.config);
      const { kekAllowList } = await import('../keys/key-service.js');
      const decision =
        opts.kek !== undefined && !kekAllowList(config.keys)(opts.kek)
          ? { allowed: false, reason: `keys.allowedKeks does not allow KEK ${opts.kek}` }
          : config.policy
            ? new Policy(config.policy).explain(client, verb, keyId, opts.kek)
            : { allowed: true, reason: `${file ?? 'the embedded default'} has no policy, so every client may do everything` };
      process.stdout.write(`${decision.allowed ? 'allowed' : 'denied'}: ${decision.reason}\n`);
      if (!decision.allowed) throw new AlreadyReported('denied');
    });
  policy
    .command('hash-token')
    .description(`read a bearer token (at least ${MIN_TOKEN_LENGTH} characters) on stdin and print the sha256:<hex> form the config stores`)
    .action(async () => {
      const { hashToken } = await import('../policy/policy.js');
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      const token = Buffer.concat(chunks)
        .toString('utf8')
        .replace(/\r?\n$/, '');
      if (token.length === 0) throw new UsageError('no token on stdin');
      // Anonymous peers (TCP, Unix without peer credentials) may retry on new connections.
      if (token.length < MIN_TOKEN_LENGTH) {
        throw new UsageError(`token is shorter than ${MIN_TOKEN_LENGTH} characters; use a random one, such as: openssl rand -base64 32`);
      }
      process.stdout.write(`${hashToken(token)}\n`);
    });
}

function isVerb(text: string): text is Verb {
  return (VERBS as readonly string[]).includes(text);
}
