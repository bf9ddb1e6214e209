import type { Command } from 'commander';
import { isAbsolute, resolve } from 'node:path';
import type { StoreBackend } from '../keystore/backend.js';
import type { BackendSettings } from '../keystore/open.js';
import { parseStoreUrl, type StoreLocation } from '../keystore/url.js';
import { UsageError } from './errors.js';

// Which store `kmsgw store` commands open, and with which object-store settings.

/** Per-side settings given on the command line; unset ones come from the config's `keystore`. */
export interface SideFlags {
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
}

/** `--endpoint` etc. for `verify`; `--from-endpoint`, `--to-endpoint` etc. for `copy`. */
export function sideOptions(cmd: Command, side: '' | 'from' | 'to'): Command {
  const flag = (name: string) => (side === '' ? `--${name}` : `--${side}-${name}`);
  const which = side === '' ? 'the store' : side === 'from' ? 'the source' : 'the destination';
  return cmd
    .option(`${flag('endpoint')} <url>`, `object-store endpoint of ${which} (emulators, S3-compatible stores); default: keystore.endpoint`)
    .option(`${flag('region')} <region>`, `S3 region of ${which}; default: keystore.region, else the SDK's`)
    .option(flag('force-path-style'), `S3 path-style addressing for ${which} (emulators, MinIO); default: keystore.forcePathStyle`)
    .option(`--no-${flag('force-path-style').slice(2)}`, `virtual-hosted S3 addressing for ${which}, whatever the config says`);
}

/** The side's flags out of commander's options (`fromEndpoint`, `toRegion`, ...). */
export function sideOf(flags: object, side: '' | 'from' | 'to'): SideFlags {
  const opts = flags as Record<string, unknown>;
  const key = (name: string) => (side === '' ? name : `${side}${name[0]?.toUpperCase()}${name.slice(1)}`);
  return {
    endpoint: opts[key('endpoint')] as string | undefined,
    region: opts[key('region')] as string | undefined,
    forcePathStyle: opts[key('forcePathStyle')] as boolean | undefined,
  };
}

/** A store URL, with a relative `file://` folder made absolute against the current folder. */
export function parseLocation(url: string, what: string): StoreLocation {
  let location: StoreLocation;
  try {
    location = parseStoreUrl(url);
  } catch (err) {
    throw new UsageError(`${what}: ${(err as Error).message}`);
  }
  return location.kind === 'file' && !isAbsolute(location.dir) ? { kind: 'file', dir: resolve(location.dir) } : location;
}

/**
 * Backend settings per side: the config's `keystore` (read only when some side is an object
 * store, or `--config` is given), then that side's flags.
 */
export async function settingsFor(
  sides: ReadonlyArray<readonly [StoreLocation, SideFlags]>,
  configFile: string | undefined,
): Promise<BackendSettings[]> {
  const { KeyStoreSettingsSchema } = await import('../keystore/settings.js');
  let base: BackendSettings = { forcePathStyle: false };
  if (configFile !== undefined || sides.some(([location]) => location.kind !== 'file')) {
    const { loadConfig } = await import('../config/load.js');
    const { endpoint, forcePathStyle, region } = (await loadConfig(configFile)).config.keystore;
    base = { endpoint, forcePathStyle, region };
  }
  const schema = KeyStoreSettingsSchema.pick({ endpoint: true, forcePathStyle: true, region: true });
  return sides.map(([, flags]) => {
    const merged = {
      endpoint: flags.endpoint ?? base.endpoint,
      forcePathStyle: flags.forcePathStyle ?? base.forcePathStyle,
      region: flags.region ?? base.region,
    };
    const parsed = schema.safeParse(merged);
    if (!parsed.success) {
      throw new UsageError(parsed.error.issues.map((i) => `${i.path.join('.') || 'settings'}: ${i.message}`).join('; '));
    }
    return parsed.data;
  });
}

export async function openStore(location: StoreLocation, settings: BackendSettings, readOnly: boolean): Promise<StoreBackend> {
  const { openBackend } = await import('../keystore/open.js');
  return openBackend(location, settings, { readOnly });
}

/** A progress reporter for stderr that prints at most once a second (and not at all in a run under a second). */
export function throttled(): (line: () => string) => void {
  let lastAt = Date.now();
  return (line) => {
    const now = Date.now();
    if (now - lastAt < 1000) return;
    lastAt = now;
    process.stderr.write(`${line()}\n`);
  };
}
