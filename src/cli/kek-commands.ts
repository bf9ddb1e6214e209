import type { Command } from 'commander';
import type { KmsgwClient } from '../client/index.js';
import { clientOptions, withClient, type ClientFlags } from './client-flags.js';
import { UsageError } from './errors.js';

interface AllVersionsFlag extends ClientFlags {
  allVersions?: boolean;
}

/** What `kmsgw key rewrap-all` reads of INFO: enabled versions and the KEKs wrapping them. */
interface VersionKeks {
  readonly version: number;
  readonly state: string;
  readonly keks: ReadonlyArray<{ readonly kek: string; readonly pending?: boolean }>;
}

function enabledVersionsUnder(info: unknown, kek: string): number[] {
  const versions = (info as { versions?: readonly VersionKeks[] }).versions ?? [];
  return versions.filter((v) => v.state === 'enabled' && v.keks.some((k) => k.kek === kek && k.pending !== true)).map((v) => v.version);
}

/**
 * Replaces `from` by `to` in every enabled version of `keyId` that is wrapped under `from`:
 * the new wrap first, then the old one dropped, so a version is never without a KEK. Each
 * step is idempotent, which is what makes `rewrap-all` resumable. Resolves with the versions changed.
 */
async function replaceKek(client: KmsgwClient, keyId: string, from: string, to: string): Promise<number> {
  const versions = enabledVersionsUnder(await client.info(keyId), from);
  for (const v of versions) {
    await client.addKek(`${keyId}@${v}`, to);
    await client.removeKek(`${keyId}@${v}`, from);
  }
  return versions.length;
}

/** `kmsgw key add-kek|remove-kek|add-recovery|rewrap-all`: a key's KEK set and recovery copies, changed inside the gateway. */
export function addKekCommands(key: Command, printJson: (value: unknown) => void): void {
  for (const [name, verb] of [
    ['add-kek', 'add'],
    ['remove-kek', 'remove'],
  ] as const) {
    clientOptions(
      key
        .command(`${name} <key-id> <kek-uri>`)
        .description(
          verb === 'add'
            ? 'also wrap the newest version (or key-id@version, or --all-versions) under another KEK; existing envelopes keep decrypting'
            : 'stop wrapping the newest version (or key-id@version, or --all-versions) under a KEK; a version keeps at least one',
        )
        .option('--all-versions', 'every enabled version'),
    ).action(async (id: string, kek: string, opts: AllVersionsFlag) => {
      if (opts.allVersions === true && id.includes('@')) throw new UsageError('give key-id@version or --all-versions, not both');
      const n = await withClient(opts, (c) =>
        verb === 'add' ? c.addKek(id, kek, opts.allVersions) : c.removeKek(id, kek, opts.allVersions),
      );
      process.stdout.write(`${n}\n`);
    });
  }

  clientOptions(
    key.command('add-recovery <key-id...>').description("seal every enabled version to the gateway's keys.recovery age recipients"),
  ).action(async (ids: string[], opts: ClientFlags) => {
    const sealed: Record<string, number> = {};
    await withClient(opts, async (c) => {
      for (const id of ids) sealed[id] = await c.addRecovery(id);
    });
    printJson(sealed);
  });

  clientOptions(
    key
      .command('rewrap-all')
      .description('move every key (under --prefix) from one KEK to another, inside the gateway; resumable, progress on stderr')
      .requiredOption('--from <kek-uri>', 'the KEK to leave')
      .requiredOption('--to <kek-uri>', 'the KEK to wrap under instead')
      .option('--prefix <prefix>', 'only key ids starting with this', '')
      .option('--start-after <key-id>', 'resume after this key id (each key is idempotent, so a plain re-run works too)'),
  ).action(async (opts: ClientFlags & { from: string; to: string; prefix: string; startAfter?: string }) => {
    if (opts.from === opts.to) throw new UsageError('--from and --to name the same KEK');
    const totals = await withClient(opts, async (c) => {
      const ids = (await c.list(opts.prefix === '' ? undefined : opts.prefix)).filter(
        (id) => opts.startAfter === undefined || id > opts.startAfter,
      );
      let keys = 0;
      let versions = 0;
      for (const [i, id] of ids.entries()) {
        try {
          const n = await replaceKek(c, id, opts.from, opts.to);
          versions += n;
          if (n > 0) keys++;
        } catch (err) {
          const resume = i === 0 ? (opts.startAfter ?? '') : (ids[i - 1] as string);
          process.stderr.write(`rewrap-all: stopped at ${id}; resume with --start-after '${resume}'\n`);
          throw err;
        }
        process.stderr.write(`rewrap-all: ${i + 1}/${ids.length} keys checked, ${keys} moved (${id})\n`);
      }
      return { checked: ids.length, keys, versions };
    });
    printJson(totals);
  });
}
