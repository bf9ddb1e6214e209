import type { Command } from 'commander';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DEFAULT_CONFIG_FILE } from '../config/defaults.js';
import { VERBS } from '../protocol/parser.js';
import { KV_VERBS, type Permission } from '../policy/types.js';
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
    .action((opts: { config?: string }) => serve(opts.config));

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
    .command('verify <files...>')
    .description(
      "check an audit log's hash chain; exit 0 when intact, 1 naming the first line altered, removed, inserted or reordered. " +
        'Several files (rotated ones first, oldest to newest) are checked as one chain going on from file to file',
    )
    .option(
      '--after <seq:hash>',
      "the first file continues a chain: the seq and SHA-256 of the line before its first (a deleted file's last line)",
    )
    .action(async (files: string[], opts: { after?: string }) => {
      const { verifyAuditFile, describeResult } = await import('../audit/verify.js');
      let after = opts.after === undefined ? undefined : parseChainPoint(opts.after);
      for (const file of files) {
        const result = await verifyAuditFile(file, after ? { after } : {});
        if (!result.ok) throw new Error(`${file}: ${describeResult(result)}`);
        process.stdout.write(`${files.length > 1 ? `${file}: ` : ''}${describeResult(result)}\n`);
        after = result.end ?? after;
      }
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
      if (!isVerb(verb)) throw new UsageError(`verb must be one of ${PERMISSIONS.join(' ')}`);
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

/** `--after 1042:<64 hex>`. */
function parseChainPoint(text: string): { seq: number; hash: string } {
  const m = /^(\d+):([0-9a-f]{64})$/.exec(text);
  if (!m) throw new UsageError('--after must be <seq>:<sha256 hex> (the seq of the line before, and its hash)');
  return { seq: Number(m[1]), hash: m[2] as string };
}

/**
 * `kmsgw serve`: runs the gateway until SIGINT/SIGTERM, reloads on SIGHUP, and tells systemd
 * (when it started the gateway with Type=notify) when it is ready, reloading and stopping.
 */
async function serve(configFile: string | undefined): Promise<void> {
  // SIGHUP's default action ends the process: take it over before start-up can be interrupted,
  // and reload once started if one came meanwhile.
  let hupDuringStart = false;
  const early = (): void => void (hupDuringStart = true);
  process.on('SIGHUP', early);
  const { loadConfig, ConfigError } = await import('../config/load.js');
  const { startGateway } = await import('../serve.js');
  const { SystemdNotifier } = await import('../ops/systemd.js');
  const loaded = await loadConfig(configFile);
  const running = await startGateway(loaded.config, { baseDir: loaded.baseDir });
  const log = running.log;
  const systemd = new SystemdNotifier(log);
  let stopping = false;
  const stopped = new Promise<void>((done) => {
    const stop = (signal: string): void => {
      if (stopping) {
        // A second signal: the operator will not wait for the drain. Zeroize, then go.
        log.warn({ signal }, 'second signal: exiting without waiting for requests in flight');
        running.cache.clear();
        process.exit(1);
      }
      stopping = true;
      systemd.stopping();
      log.info({ signal, graceMs: loaded.config.limits.shutdownGraceMs }, 'shutting down: answering requests already read');
      void running.close().then(done);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });

  let reloads = Promise.resolve();
  const reload = (): void => {
    reloads = reloads.then(async () => {
      if (stopping) return;
      log.info({ signal: 'SIGHUP' }, 'reloading the configuration');
      systemd.reloading();
      try {
        const next = await loadConfig(configFile);
        await running.reload(next);
      } catch (err) {
        const fields = err instanceof ConfigError ? err.fields : [];
        log.error({ fields, err: (err as Error).message }, 'reload refused: the running configuration stays');
      } finally {
        if (!stopping) systemd.ready();
      }
    });
  };
  process.off('SIGHUP', early);
  process.on('SIGHUP', reload);

  // Listeners are up and warm-up is done (the KMS canary is not waited for: readiness reports
  // it), and every signal is handled: tell systemd, then say so.
  systemd.ready();
  systemd.startWatchdog();
  log.info({ config: loaded.file ?? 'embedded development default' }, 'configuration loaded');
  if (hupDuringStart) reload();
  await stopped;
}

const PERMISSIONS: readonly Permission[] = [...VERBS, ...KV_VERBS];

function isVerb(text: string): text is Permission {
  return (PERMISSIONS as readonly string[]).includes(text);
}
