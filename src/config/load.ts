import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DEFAULT_CONFIG_FILE } from './defaults.js';
import { ConfigSchema, type Config } from './schema.js';

/** The config file is missing, unreadable or invalid; the message names the field. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'CONFIG' as const;
  /** The fields that did not validate (dotted paths), when the config was read but refused. */
  readonly fields: readonly string[];

  constructor(message: string, options?: ErrorOptions & { readonly fields?: readonly string[] }) {
    super(message, options);
    this.fields = options?.fields ?? [];
  }
}

/** The config in effect and where it came from. */
export interface LoadedConfig {
  readonly config: Config;
  /** The file read, or undefined for the embedded development default. */
  readonly file: string | undefined;
  /** Folder relative paths are resolved against. */
  readonly baseDir: string;
}

/**
 * Environment overrides, applied after the file. Documented in README.
 * Each maps a variable to a path in the config.
 */
export const ENV_OVERRIDES = {
  KMSGW_DATA_DIR: ['dataDir'],
  KMSGW_SOCKET: ['listen', 'socket', 'path'],
  KMSGW_LOG_LEVEL: ['log', 'level'],
  KMSGW_LOG_FORMAT: ['log', 'format'],
  KMSGW_DEFAULT_KEK: ['keys', 'defaultKek'],
  KMSGW_AUTO_CREATE: ['keys', 'autoCreate'],
  KMSGW_TCP_PORT: ['listen', 'tcp', 'port'],
  KMSGW_CACHE_TTL_MS: ['cache', 'ttlMs'],
  KMSGW_KMS_TIMEOUT_MS: ['kms', 'timeoutMs'],
  KMSGW_AUDIT_FILE: ['audit', 'file'],
  KMSGW_KEYSTORE_URL: ['keystore', 'url'],
  KMSGW_OPS_LISTEN: ['ops', 'listen'],
} as const satisfies Record<string, readonly string[]>;

/** Embedded development default: local KEK (enabled here only), keys created on first use. */
export const DEV_DEFAULT = { keys: { autoCreate: true }, kms: { adapters: { local: { enabled: true } } } } as const;

function coerce(raw: string): unknown {
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  if (/^-?\d+$/.test(raw)) return Number(raw);
  return raw;
}

function setPath(target: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = target;
  for (const part of path.slice(0, -1)) {
    const next = node[part];
    if (next === null || typeof next !== 'object') node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[path[path.length - 1] as string] = value;
}

function describe(error: z.ZodError, source: string): string {
  const lines = error.issues.map((issue) => {
    const field = issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    return `  ${field}: ${issue.message}`;
  });
  return `invalid configuration in ${source}:\n${lines.join('\n')}`;
}

/** Validates a plain object (after env overrides) into a Config. */
export function validateConfig(raw: unknown, source: string, env: NodeJS.ProcessEnv = {}): Config {
  if (raw === null || raw === undefined) raw = {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`${source}: the top level must be a mapping`);
  const merged = structuredClone(raw) as Record<string, unknown>;
  for (const [name, path] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    if (value !== undefined && value !== '') setPath(merged, path, coerce(value));
  }
  const result = ConfigSchema.safeParse(merged);
  if (!result.success) {
    const fields = [...new Set(result.error.issues.map((i) => (i.path.length > 0 ? i.path.join('.') : '(top level)')))];
    throw new ConfigError(describe(result.error, source), { fields });
  }
  return result.data;
}

/**
 * Loads `file`, else `$KMSGW_CONFIG`, else `./kmsgw.yaml` when present, else the
 * embedded development default. YAML or JSON (JSON is YAML).
 */
export async function loadConfig(
  file: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
): Promise<LoadedConfig> {
  const chosen =
    file ?? (env['KMSGW_CONFIG'] || undefined) ?? (existsSync(resolve(cwd, DEFAULT_CONFIG_FILE)) ? DEFAULT_CONFIG_FILE : undefined);
  if (chosen === undefined) {
    return { config: validateConfig(DEV_DEFAULT, 'the embedded default', env), file: undefined, baseDir: cwd };
  }
  const path = resolve(cwd, chosen);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`config file ${path} is not valid YAML/JSON: ${(err as Error).message}`, { cause: err });
  }
  return { config: validateConfig(raw, path, env), file: path, baseDir: dirname(path) };
}
