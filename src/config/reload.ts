import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import type { AuditLog } from '../audit/log.js';
import { canChangeFormat, reconfigureLogger, type Logger } from '../log/logger.js';
import { SwappableAccess } from '../policy/holder.js';
import { Policy } from '../policy/policy.js';
import type { Listener } from '../server/listener.js';
import type { LoadedConfig } from './load.js';
import type { Config } from './schema.js';

/**
 * The fields a reload (SIGHUP) applies to the running gateway. Every other field is
 * restart-only: a reload that changes one says so, naming it, in a warning and in
 * `restartRequired`, and it keeps its value until the gateway restarts (docs/operations.md,
 * "Reload"). An entry covers the fields below it.
 */
export const RELOADABLE_FIELDS = [
  // The policy's contents; turning the policy on or off (AUTH in use or not) is restart-only.
  'policy.clients',
  'policy.authFailures',
  // The files are re-read on every reload (renewed certificates under the same paths).
  'listen.tls.cert',
  'listen.tls.key',
  'listen.tls.ca',
  'log.level',
  'log.format',
  'limits.maxLineBytes',
  'limits.maxConnections',
  'limits.maxConnectionsPerPeer',
  'limits.maxBufferedBytes',
  'limits.maxInFlight',
  'limits.idleTimeoutMs',
  'limits.requestTimeoutMs',
  'cache.maxEntries',
  'cache.ttlMs',
  'cache.staleIfErrorMs',
  // New recipients seal the versions made from now on; `ADDRECOVERY` seals the older ones.
  'keys.recovery',
  'ops',
] as const;

/** What a reload did. */
export type ReloadResult =
  | {
      readonly ok: true;
      /** Changed fields now in effect. */
      readonly applied: readonly string[];
      /** Re-read or reopened whether changed or not: `listen.tls` (certificates), `audit.file` (after rotation). */
      readonly reopened: readonly string[];
      /** Changed fields that keep their old value until a restart. */
      readonly restartRequired: readonly string[];
      /** What went wrong after the new settings were applied (the audit file could not be reopened, ...). */
      readonly warnings: readonly string[];
    }
  | {
      readonly ok: false;
      /** The fields whose new values could not be used. */
      readonly fields: readonly string[];
      readonly error: string;
    };

/** The parts of a running gateway a reload changes. */
export interface ReloadTargets {
  readonly log: Logger;
  /** The policy holder the Pipeline and Executor ask (absent: the gateway runs without a policy). */
  readonly access: SwappableAccess | undefined;
  readonly listener: Pick<Listener, 'reconfigure' | 'setTlsCredentials'>;
  readonly deks: { reconfigure(settings: { maxEntries: number; ttlMs: number; staleIfErrorMs: number }): void };
  /** Takes new `keys.recovery` recipients. */
  readonly keys: { setRecovery(recipients: readonly string[]): void };
  readonly audit: Pick<AuditLog, 'reopen'> | undefined;
  /** Applies a changed `ops` section (moves the ops HTTP listener). */
  readonly ops: (next: Config) => Promise<void>;
}

/** Leaf paths where `a` and `b` differ; arrays count as leaves. */
export function changedFields(a: unknown, b: unknown, path = ''): string[] {
  if (isRecord(a) && isRecord(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].sort().flatMap((k) => changedFields(a[k], b[k], path === '' ? k : `${path}.${k}`));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [path];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function reloadable(field: string, fields: readonly string[]): boolean {
  return fields.some((f) => field === f || field.startsWith(`${f}.`));
}

interface Prepared {
  readonly policy?: Policy;
  readonly tls?: { cert: Buffer; key: Buffer; ca: Buffer };
}

/**
 * Makes the gateway's `reload(next)`: applies what `RELOADABLE_FIELDS` lists, reports the rest,
 * re-reads the TLS files and reopens the audit file. All or nothing for what can fail (policy,
 * TLS files): those are prepared before anything is changed. Reloads run one at a time.
 */
export function createReloader(started: LoadedConfig, targets: ReloadTargets): (next: LoadedConfig) => Promise<ReloadResult> {
  const log = targets.log;
  let current = started.config;
  let queue: Promise<unknown> = Promise.resolve();

  async function prepare(next: LoadedConfig, changed: readonly string[]): Promise<Prepared> {
    const { config, baseDir } = next;
    const policy =
      targets.access && config.policy && changed.some((f) => f.startsWith('policy.'))
        ? new Policy(config.policy, Date, targets.access.current instanceof Policy ? targets.access.current : undefined)
        : undefined;
    const tls = started.config.listen.tls && config.listen.tls;
    if (!tls) return { ...(policy ? { policy } : {}) };
    const files: Record<'cert' | 'key' | 'ca', Buffer> = { cert: Buffer.alloc(0), key: Buffer.alloc(0), ca: Buffer.alloc(0) };
    for (const name of ['cert', 'key', 'ca'] as const) {
      try {
        files[name] = await readFile(resolve(baseDir, tls[name]));
      } catch (err) {
        throw new PrepareError([`listen.tls.${name}`], `cannot read ${tls[name]}: ${(err as Error).message}`);
      }
    }
    try {
      createSecureContext({ ...files, minVersion: 'TLSv1.3' });
    } catch (err) {
      throw new PrepareError(
        ['listen.tls.cert', 'listen.tls.key', 'listen.tls.ca'],
        `not a usable TLS certificate, key and CA: ${(err as Error).message}`,
      );
    }
    return { ...(policy ? { policy } : {}), tls: files };
  }

  async function reloadNow(next: LoadedConfig): Promise<ReloadResult> {
    const restartRequired = changedFields(started.config, next.config).filter((f) => !reloadable(f, RELOADABLE_FIELDS));
    const changed = changedFields(current, next.config).filter((f) => reloadable(f, RELOADABLE_FIELDS));
    let prepared: Prepared;
    try {
      prepared = await prepare(next, changed);
    } catch (err) {
      const refused = err instanceof PrepareError ? err.fields : [];
      log.error({ fields: refused, err: (err as Error).message }, 'reload refused: the running configuration stays');
      return { ok: false, fields: refused, error: (err as Error).message };
    }
    const config = next.config;
    const applied: string[] = [];
    const reopened: string[] = [];
    const warnings: string[] = [];
    if (prepared.policy && targets.access) {
      targets.access.swap(prepared.policy);
      applied.push(...changed.filter((f) => f.startsWith('policy.')));
    }
    if (prepared.tls) {
      targets.listener.setTlsCredentials(prepared.tls);
      reopened.push('listen.tls');
      applied.push(...changed.filter((f) => f.startsWith('listen.tls.')));
    }
    const logChanged = reconfigureLogger(log, config.log);
    applied.push(...logChanged);
    if (changed.includes('log.format') && !canChangeFormat(log)) restartRequired.push('log.format');
    const { limits, cache } = config;
    targets.listener.reconfigure(limits);
    applied.push(...changed.filter((f) => f.startsWith('limits.')));
    targets.deks.reconfigure({ maxEntries: cache.maxEntries, ttlMs: cache.ttlMs, staleIfErrorMs: cache.staleIfErrorMs });
    applied.push(...changed.filter((f) => f.startsWith('cache.')));
    targets.keys.setRecovery(config.keys.recovery);
    applied.push(...changed.filter((f) => f === 'keys.recovery'));
    const opsChanged = changed.filter((f) => reloadable(f, ['ops']));
    if (opsChanged.length > 0) {
      try {
        await targets.ops(config);
        applied.push(...opsChanged);
      } catch (err) {
        warnings.push(`ops: ${(err as Error).message}`);
      }
    }
    current = config;
    if (targets.audit) {
      try {
        if ((await targets.audit.reopen()) === 'reopened') reopened.push('audit.file');
      } catch (err) {
        warnings.push(`audit.file: ${(err as Error).message}`);
      }
    }
    for (const w of warnings) log.error({ problem: w }, 'reload: a setting could not be applied');
    if (restartRequired.length > 0) {
      log.warn({ fields: restartRequired }, 'reload: these changed fields take effect only after a restart; they keep their old values');
    }
    log.info({ applied, reopened, config: next.file ?? 'embedded development default' }, 'configuration reloaded');
    return { ok: true, applied, reopened, restartRequired, warnings };
  }

  return (next) => {
    const run = queue.then(() => reloadNow(next));
    queue = run.catch(() => undefined);
    return run;
  };
}

class PrepareError extends Error {
  constructor(
    readonly fields: readonly string[],
    message: string,
  ) {
    super(message);
  }
}
