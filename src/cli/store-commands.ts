import { Command } from 'commander';
import { DEFAULT_CONFIG_FILE } from '../config/defaults.js';
import type { StoreBackend } from '../keystore/backend.js';
import type { BackendSettings } from '../keystore/open.js';
import { formatStoreUrl } from '../keystore/url.js';
import { AlreadyReported, UsageError } from './errors.js';
import { openStore, parseLocation, settingsFor, sideOf, sideOptions, throttled, type SideFlags } from './store-settings.js';

interface CommonFlags {
  config?: string;
  prefix?: string;
  concurrency: string;
  timeout: string;
}

const URL_FORMS =
  'file://<dir> (relative to the current folder unless absolute), s3://<bucket>/<prefix>, gs://<bucket>/<prefix> or azblob://<account>/<container>/<prefix>';
const MAX_CONCURRENCY = 256;

/**
 * `kmsgw store verify` and `kmsgw store copy`: work on key stores directly (a folder or an
 * object store), with no gateway. The logic is in src/keystore/verify.ts and copy.ts; this
 * file parses flags, opens the stores, and prints.
 */
export function addStoreCommands(program: Command): void {
  const store = program
    .command('store')
    .description('check and copy key stores (folders or object stores) directly; no gateway needed')
    .addHelpText('after', `\nStore URLs: ${URL_FORMS}.`);

  common(
    sideOptions(
      store
        .command('verify <url>')
        .description(
          'read every key record (read-only: no lock, so a running gateway\'s store can be checked) and print one line per problem, then "verified N records: M problems"; exit 0 only when there is none',
        ),
      '',
    ),
  )
    .addHelpText(
      'after',
      [
        '',
        'Checks: the object is UTF-8 JSON and a key record (format 1) of the id its name says; version numbers',
        'increase; every enabled version has a wrapped DEK and a 32-byte commitment tag in base64; every',
        'destroyed version has neither. Wrapped DEKs are never printed.',
      ].join('\n'),
    )
    .action(async (url: string, opts: CommonFlags & SideFlags) => {
      const { verifyStore, quoteId: quote } = await import('../keystore/verify.js');
      const run = runFlags(opts);
      const location = parseLocation(url, '<url>');
      const settings = await settingsFor([[location, sideOf(opts, '')]], opts.config);
      const backend = await openStore(location, settings[0] as BackendSettings, true);
      const progress = throttled();
      let last = { records: 0, problems: 0 };
      const summary = (s: typeof last) => `verified ${s.records} records: ${s.problems} problems`;
      await interruptible(
        async (signal) => {
          last = await verifyStore(backend, {
            ...run,
            signal,
            location,
            onProblem: (p) => out(`${quote(p.id)}: ${p.problem}`),
            onProgress: (s) => {
              last = s;
              progress(() => `verify: ${s.records} records read, ${s.problems} problems so far`);
            },
          });
        },
        () => summary(last),
        () => backend.close(),
      );
      out(summary(last));
      if (last.problems > 0) throw new AlreadyReported('problems found');
    });

  common(
    sideOptions(
      sideOptions(
        store
          .command('copy')
          .description(
            'copy every key record from one store to another, idempotently; prints "copied X, unchanged Y, refused Z, failed W"; exit 0 only when none is refused or failed',
          )
          .requiredOption('--from <url>', 'source store (opened read-only: a running gateway may hold it)')
          .requiredOption('--to <url>', 'destination store (created if it is a folder that does not exist)')
          .option('--force', 'replace destination records that differ from the source (each only if unchanged since it was read)'),
        'from',
      ),
      'to',
    ),
  )
    .addHelpText(
      'after',
      [
        '',
        'Each source record is verified (as `store verify` does) before it is copied; an invalid one is reported',
        'and not copied. A destination record with the same content is left alone (unchanged). A missing one is',
        'written create-only. A different one is refused, with what differs, unless --force replaces it with a',
        'compare-and-swap on the revision just read. A write that loses a race with another writer is reported,',
        'never retried: run the copy again. Every copy is read back and compared byte for byte.',
        '',
        "Object-store settings come from the config's keystore section (endpoint, forcePathStyle, region) for both",
        'sides; --from-* and --to-* override them per side, e.g. to copy between two emulators or clouds.',
      ].join('\n'),
    )
    .action(async (opts: CommonFlags & { from: string; to: string; force?: boolean } & Record<string, unknown>) => {
      const { copyStore } = await import('../keystore/copy.js');
      const { quoteId: quote } = await import('../keystore/verify.js');
      const run = runFlags(opts);
      const from = parseLocation(opts.from, '--from');
      const to = parseLocation(opts.to, '--to');
      const [fromSettings, toSettings] = (await settingsFor(
        [
          [from, sideOf(opts, 'from')],
          [to, sideOf(opts, 'to')],
        ],
        opts.config,
      )) as [BackendSettings, BackendSettings];
      if (formatStoreUrl(from) === formatStoreUrl(to) && JSON.stringify(fromSettings) === JSON.stringify(toSettings)) {
        throw new UsageError(`--from and --to are the same store (${formatStoreUrl(from)})`);
      }
      const source = await openStore(from, fromSettings, true);
      let destination: StoreBackend;
      try {
        destination = await openStore(to, toSettings, false);
      } catch (err) {
        await source.close();
        throw err;
      }
      const progress = throttled();
      let last = { copied: 0, unchanged: 0, refused: 0, failed: 0 };
      const summary = (s: typeof last) => `copied ${s.copied}, unchanged ${s.unchanged}, refused ${s.refused}, failed ${s.failed}`;
      await interruptible(
        async (signal) => {
          last = await copyStore(source, destination, {
            ...run,
            signal,
            force: opts.force === true,
            sourceLocation: from,
            onEvent: (e) => {
              if (e.kind === 'failed') out(`failed ${quote(e.id)}: ${e.problem}`);
              else if (e.kind === 'refused') out(`refused ${quote(e.id)}: differs from the source (${e.difference}); --force replaces it`);
              else out(`replaced ${quote(e.id)} (${e.difference})`);
            },
            onProgress: (s) => {
              last = s;
              progress(() => `copy: ${s.copied + s.unchanged + s.refused + s.failed} records done (${summary(s)})`);
            },
          });
        },
        () => summary(last),
        () => Promise.all([source.close(), destination.close()]),
      );
      out(summary(last));
      if (last.refused > 0 || last.failed > 0) throw new AlreadyReported('not everything was copied');
    });
}

function common(cmd: Command): Command {
  return cmd
    .option('--prefix <prefix>', 'only key ids starting with this')
    .option(
      '-c, --config <file>',
      `config whose keystore section gives object-store settings (default: $KMSGW_CONFIG, else ./${DEFAULT_CONFIG_FILE} if present)`,
    )
    .option('--concurrency <n>', `records handled at once (1-${MAX_CONCURRENCY})`, '16')
    .option('--timeout <ms>', 'longest wait for one store call', '30000');
}

function runFlags(opts: CommonFlags): { prefix: string; concurrency: number; callTimeoutMs: number } {
  const concurrency = Number(opts.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY) {
    throw new UsageError(`--concurrency must be a whole number from 1 to ${MAX_CONCURRENCY}`);
  }
  const callTimeoutMs = Number(opts.timeout);
  if (!Number.isInteger(callTimeoutMs) || callTimeoutMs < 1) throw new UsageError('--timeout must be a whole number of ms');
  return { prefix: opts.prefix ?? '', concurrency, callTimeoutMs };
}

/**
 * Runs `work` with a signal that Ctrl-C (SIGINT) or SIGTERM aborts: calls under way stop, the
 * totals so far are printed. Any failure prints them too, before the error. `close` runs last.
 */
async function interruptible(
  work: (signal: AbortSignal) => Promise<void>,
  soFar: () => string,
  close: () => Promise<unknown>,
): Promise<void> {
  const controller = new AbortController();
  const stop = () => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    await work(controller.signal);
  } catch (err) {
    if (controller.signal.aborted) {
      out(`interrupted: ${soFar()}`);
      throw new AlreadyReported('interrupted', { cause: err });
    }
    out(`stopped: ${soFar()}`);
    throw err;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    await close();
  }
}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}
