import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { RegistryOptions } from '../../adapters/registry.js';
import type { AdapterSettings } from '../../adapters/settings.js';
import { DEFAULT_CONFIG_FILE } from '../config/defaults.js';
import { zeroize } from '../crypto/secret.js';
import type { StoreBackend } from '../keystore/backend.js';
import type { BackendSettings } from '../keystore/open.js';
import { formatStoreUrl } from '../keystore/url.js';
import { GatewayError } from '../protocol/errors.js';
import type { RecoverEvent, RecoverSummary } from '../recovery/recover.js';
import { AlreadyReported, UsageError } from './errors.js';
import { openStore, parseLocation, settingsFor, throttled } from './store-settings.js';

interface RecoverFlags {
  identity: string[];
  store: string;
  out: string;
  kek: string;
  id?: string[];
  config?: string;
}

/**
 * `kmsgw recover`: break glass. Rebuilds DEKs from their age recovery copies (src/recovery/)
 * into a new store under a KEK the operator names; no other KMS is called. This file reads
 * the identity, opens the stores and the one KEK, and prints.
 */
export function addRecoverCommand(program: Command): void {
  program
    .command('recover')
    .description(
      'break glass: rebuild every DEK from its offline age recovery copy, with no KMS, into a new store wrapped under the KEK you name; exit 0 only when every enabled version was rebuilt',
    )
    .requiredOption(
      '--identity <file>',
      'age identity file (AGE-SECRET-KEY-1… lines, as age-keygen writes it); "-" reads standard input; repeat for several',
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .requiredOption('--store <url>', 'store to recover from (opened read-only)')
    .requiredOption('--out <url>', 'new store to write (a folder is created); an id already there is refused, never overwritten')
    .requiredOption('--kek <uri>', 'KEK every rebuilt DEK is wrapped under; local:// is allowed here without kms.adapters.local.enabled')
    .option('--id <id...>', 'only these key ids (default: every record of --store)')
    .option(
      '-c, --config <file>',
      `config whose kms.adapters (and keystore, for object stores) settings apply (default: $KMSGW_CONFIG, else ./${DEFAULT_CONFIG_FILE} if present)`,
    )
    .addHelpText(
      'after',
      [
        '',
        'Each enabled version is opened with the identity, checked against its commitment tag, wrapped under --kek,',
        'unwrapped again and checked, and written with that one wrap and its recovery copy. A version without a',
        'usable recovery copy keeps its old wraps and is listed on stderr; destroyed versions are copied as they are.',
        'Progress and problems go to stderr, the totals to stdout. Key material is never printed. See docs/recovery.md.',
      ].join('\n'),
    )
    .action(async (opts: RecoverFlags) => {
      const { recoverStore } = await import('../recovery/recover.js');
      const { AdapterRegistry } = await import('../../adapters/registry.js');
      const identities = await readIdentities(opts.identity);
      const from = parseLocation(opts.store, '--store');
      const to = parseLocation(opts.out, '--out');
      if (formatStoreUrl(from) === formatStoreUrl(to))
        throw new UsageError(`--store and --out are the same store (${formatStoreUrl(from)})`);
      const [fromSettings, toSettings] = (await settingsFor(
        [
          [from, {}],
          [to, {}],
        ],
        opts.config,
      )) as [BackendSettings, BackendSettings];
      const adapters = new AdapterRegistry(await adapterOptions(opts.kek, opts.config));
      try {
        adapters.assertSupported(opts.kek);
      } catch (err) {
        throw new UsageError(`--kek: ${(err as Error).message}`);
      }
      let source: StoreBackend | undefined;
      let destination: StoreBackend | undefined;
      const controller = new AbortController();
      const stop = () => (controller.signal.aborted ? process.exit(130) : controller.abort());
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      let last: RecoverSummary = { records: 0, recovered: 0, kept: 0, destroyed: 0, refused: 0, failed: 0 };
      try {
        source = await openStore(from, fromSettings, true);
        destination = await openStore(to, toSettings, false);
        const progress = throttled();
        last = await recoverStore(source, destination, {
          identities,
          kek: opts.kek,
          adapters,
          ...(opts.id === undefined ? {} : { ids: opts.id }),
          signal: controller.signal,
          onEvent: (e) => err(describeEvent(e)),
          onProgress: (s) => {
            last = s;
            progress(() => `recover: ${s.records + s.refused + s.failed} records done (${summary(s)})`);
          },
        });
      } catch (error) {
        err(`${controller.signal.aborted ? 'interrupted' : 'stopped'}: ${summary(last)}`);
        if (controller.signal.aborted) throw new AlreadyReported('interrupted', { cause: error });
        throw error;
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        await Promise.all([source?.close(), destination?.close(), adapters.close()]);
      }
      process.stdout.write(`${summary(last)}\n`);
      if (last.kept > 0 || last.refused > 0 || last.failed > 0) throw new AlreadyReported('not every version was recovered');
    });
}

/** Every identity of the files named; the files' bytes are zeroized (the strings cannot be). */
async function readIdentities(files: readonly string[]): Promise<string[]> {
  const { parseIdentityFile } = await import('../recovery/age.js');
  if (files.filter((f) => f === '-').length > 1) throw new UsageError('--identity - (standard input) can be given once');
  const identities: string[] = [];
  for (const file of files) {
    let bytes: Buffer | undefined;
    try {
      bytes = file === '-' ? await readStdin() : await readFile(file);
      identities.push(...parseIdentityFile(bytes.toString('utf8')));
    } catch (error) {
      if (error instanceof GatewayError) throw new UsageError(`--identity ${file}: ${error.message}`);
      const code = (error as NodeJS.ErrnoException).code;
      throw new UsageError(`--identity ${file}: ${code === 'ENOENT' ? 'no such file' : `cannot read it (${code ?? 'unknown error'})`}`);
    } finally {
      zeroize(bytes);
    }
  }
  return identities;
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  } finally {
    zeroize(...chunks);
  }
}

/**
 * The registry's options: the config's `kms` section, with local:// KEKs allowed (the operator
 * names the KEK on this command line) and, unless `kms.adapters.local.dir` says otherwise,
 * confined to the folder of the one local KEK named.
 */
async function adapterOptions(kek: string, configFile: string | undefined): Promise<RegistryOptions> {
  const { loadConfig } = await import('../config/load.js');
  const { localKekPath } = await import('../../adapters/local/index.js');
  const { kekScheme } = await import('../../adapters/registry.js');
  const { config, baseDir } = await loadConfig(configFile);
  const dataDir = resolve(baseDir, config.dataDir);
  const local = config.kms.adapters.local;
  const dir = local.dir ?? (kekScheme(kek) === 'local' ? dirname(localKekPath(kek, dataDir)) : undefined);
  const settings: AdapterSettings = { ...config.kms.adapters, local: { ...local, enabled: true, ...(dir === undefined ? {} : { dir }) } };
  // A one-off tool: a cold client's first call (credentials, TLS) may outlast a serving gateway's deadline.
  return { dataDir, settings, timeoutMs: Math.max(config.kms.timeoutMs, 10_000), retry: config.kms.retry };
}

function describeEvent(e: RecoverEvent): string {
  const id = /^[A-Za-z0-9._\-/:~%]{1,1024}$/.test(e.id) ? e.id : JSON.stringify(e.id);
  switch (e.kind) {
    case 'kept':
      return `kept ${id}@${e.version}: ${e.reason}; written with its old wraps (${e.keks.join(', ') || 'none'})`;
    case 'refused':
      return `refused ${id}: already in --out (recover writes create-only)`;
    case 'failed':
      return `failed ${id}: ${e.problem}`;
  }
}

function summary(s: RecoverSummary): string {
  return `recovered ${s.recovered} versions in ${s.records} records (${s.destroyed} destroyed versions copied); kept ${s.kept}, refused ${s.refused}, failed ${s.failed}`;
}

function err(line: string): void {
  process.stderr.write(`${line}\n`);
}
