/*
 * Over 300 lines because it is the assembly: every part is built and started here in start-up
 * order, and torn down in the reverse order on failure and at close; split, that order would scatter.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { AdapterRegistry, DEFAULT_LOADERS, kekScheme, type AdapterLoader } from '../adapters/registry.js';
import { confinedKekPath, ensureLocalKek } from '../adapters/local/index.js';
import type { AdapterOp } from '../adapters/guard.js';
import { KekHealth } from '../adapters/health.js';
import { ConcurrencyLimit } from '../adapters/limit.js';
import { Canary, keksInUse } from './kms/canary.js';
import { readinessOf, type Readiness } from './kms/readiness.js';
import { warmUp, type WarmResult } from './keys/warm.js';
import { AuditLog } from './audit/log.js';
import type { Clock, DekCache } from './cache/dek-cache.js';
import { ConfigError, type LoadedConfig } from './config/load.js';
import { createReloader, type ReloadResult } from './config/reload.js';
import type { Config } from './config/schema.js';
import { DekService } from './keys/dek-service.js';
import { defaultKeks, KeyService } from './keys/key-service.js';
import { openKeyStore, storeLocation } from './keystore/assemble.js';
import type { KeyStore } from './keystore/key-store.js';
import { createLogger, type Logger } from './log/logger.js';
import { Executor } from './pipeline/execute.js';
import { Pipeline } from './pipeline/pipeline.js';
import { startFrontDoor } from './vault/front-door.js';
import { Secrets } from './kv/secrets.js';
import type { VaultServer } from './vault/server.js';
import { SwappableAccess } from './policy/holder.js';
import { Policy } from './policy/policy.js';
import { Listener } from './server/listener.js';
import { GatewayMetrics } from './metrics/metrics.js';
import { OpsEndpoint } from './ops/endpoint.js';
import type { OpsServer } from './ops/server.js';
import { checkStartupPermissions } from './startup/checks.js';

/** What `startGateway` needs besides the config; all optional, for tests and embedding. */
export interface StartOptions {
  /** Folder that relative paths in the config are resolved against (default: cwd). */
  readonly baseDir?: string;
  readonly logger?: Logger;
  /** Adapter table; tests add fakes for outage and throttling cases. */
  readonly loaders?: Readonly<Record<string, AdapterLoader>>;
  /** Counts adapter calls (tests: "one unwrap per cold key"). */
  readonly onAdapterCall?: (op: AdapterOp, kek: string) => void;
  readonly clock?: Clock;
}

/** A running gateway. */
export interface RunningGateway {
  /** The way in for in-process callers: `pipeline.open({ transport: 'internal' }).handle(line)`. */
  readonly pipeline: Pipeline;
  /** The unwrapped-DEK cache (tests clear or evict it to force an unwrap). */
  readonly cache: DekCache;
  /** The key records (tests call `refresh()` instead of waiting `keystore.refreshMs`). */
  readonly store: KeyStore;
  /** Key lifecycle (tests call `completePending()` instead of waiting for the background retry). */
  readonly keys: KeyService;
  /** KMS calls in flight now and at most so far (`kms.maxConcurrent`). */
  readonly kmsLimit: ConcurrencyLimit;
  readonly listener: Listener;
  readonly socketPath: string | undefined;
  readonly log: Logger;
  /** Applies a re-read config (SIGHUP): src/config/reload.ts says what changes and what needs a restart. */
  reload(next: LoadedConfig): Promise<ReloadResult>;
  /** The last known state of each KEK (fed by every KMS call and the canary). */
  readonly health: KekHealth;
  /** The background KEK check (tests call `runOnce()` instead of waiting `kms.canaryIntervalMs`). */
  readonly canary: Canary;
  /** What cache warm-up did at start (`cache.warm`). */
  readonly warmed: WarmResult;
  /** Whether the gateway can serve now, and why not (`/readyz`). */
  readiness(): Readiness;
  /** This gateway's metrics (`metrics.registry` is its prom-client registry, served on `/metrics`). */
  readonly metrics: GatewayMetrics;
  /** The Vault-compatible front door (`vault.listen`), when configured. */
  readonly vault: VaultServer | undefined;
  /** The ops HTTP listener (`ops.listen`), when configured. */
  readonly ops: OpsServer | undefined;
  /**
   * Graceful stop: no new connections or lines, every request already read is answered
   * (within `limits.shutdownGraceMs`), then the cache is zeroized, adapters closed, the
   * store released and the socket file removed.
   */
  close(): Promise<void>;
}

/** Opens the store, loads nothing else eagerly, and starts listening. */
export async function startGateway(config: Config, options: StartOptions = {}): Promise<RunningGateway> {
  const baseDir = options.baseDir ?? process.cwd();
  const log = options.logger ?? createLogger(config.log);
  const dataDir = resolve(baseDir, config.dataDir);
  await checkStartupPermissions(config, baseDir);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });

  const clockNow = options.clock ? () => (options.clock as Clock).now() : Date.now;
  const health = new KekHealth(clockNow);
  const metrics = new GatewayMetrics({ calls: config.ops.metrics });
  const kmsLimit = new ConcurrencyLimit(config.kms.maxConcurrent);
  const adapters = new AdapterRegistry(
    {
      dataDir,
      settings: config.kms.adapters,
      timeoutMs: config.kms.timeoutMs,
      retry: config.kms.retry,
      breaker: config.kms.breaker,
      health,
      limit: kmsLimit,
      now: clockNow,
      ...(options.onAdapterCall ? { onCall: options.onAdapterCall } : {}),
      ...(metrics.observeKms ? { observe: metrics.observeKms } : {}),
    },
    options.loaders ?? DEFAULT_LOADERS,
  );
  // A default KEK no adapter serves, or a local one the adapter would refuse, stops start-up
  // here instead of failing every CREATE.
  const keksByDefault = defaultKeks(config.keys.defaultKek);
  for (const defaultKek of keksByDefault) {
    let localKek: string | undefined;
    try {
      adapters.assertSupported(defaultKek);
      if (kekScheme(defaultKek) === 'local') localKek = confinedKekPath(defaultKek, { dataDir, settings: config.kms.adapters }).path;
    } catch (err) {
      throw new ConfigError(`keys.defaultKek ${defaultKek}: ${(err as Error).message}`, { cause: err });
    }
    if (localKek !== undefined && (await ensureLocalKek(localKek))) {
      log.warn({ path: localKek }, 'created a new local KEK (development only: the KEK is on this host)');
    }
  }

  // The audit log is opened before anything is served: a file that cannot be used stops start-up.
  const audit =
    config.audit.file === undefined
      ? undefined
      : await AuditLog.open({
          file: resolve(baseDir, config.audit.file),
          fsync: config.audit.fsync,
          fsyncIntervalMs: config.audit.fsyncIntervalMs,
          failOpen: config.audit.failOpen,
          logger: log,
        });
  const location = storeLocation(config.keystore, dataDir, baseDir);
  let opened;
  try {
    opened = await openKeyStore(location, config.keystore, dataDir, log);
  } catch (err) {
    await audit?.close();
    throw err;
  }
  const store = opened.store;
  const access = config.policy ? new SwappableAccess(new Policy(config.policy)) : undefined;
  if (access) log.info({ clients: config.policy?.clients.map((c) => c.name) }, 'policy loaded: default deny');
  else log.warn('no policy configured: every client that can connect may use every key and admin verb (development default)');
  const deks = new DekService(
    store,
    adapters,
    {
      maxEntries: config.cache.maxEntries,
      ttlMs: config.cache.ttlMs,
      staleIfErrorMs: config.cache.staleIfErrorMs,
      health,
      hedgeMs: config.kms.hedgeMs,
      preference: config.kms.preference,
      revocation: config.kms.revocation,
      ...(options.clock ? { clock: options.clock } : {}),
    },
    log,
  );
  // Pending wraps (keys.minWraps) are retried at the canary's pace, or every minute without one.
  const pendingRetryMs = config.kms.canaryIntervalMs > 0 ? config.kms.canaryIntervalMs : 60_000;
  const keyOptions = { ...config.keys, defaultKeks: keksByDefault, preference: config.kms.preference, pendingRetryMs, health };
  const keys = new KeyService(store, adapters, deks, keyOptions, log);
  const pipeline = new Pipeline(new Executor(keys, deks, access, log), {
    ...(access ? { access } : {}),
    ...(audit ? { observer: audit } : {}),
    ...(metrics.meter ? { meter: metrics.meter } : {}),
  });

  const socketPath = config.listen.socket ? resolve(baseDir, config.listen.socket.path) : undefined;
  let listener: Listener | undefined;
  let ops: OpsEndpoint | undefined;
  let frontDoor: VaultServer | undefined;
  // The ops listener answers from here on; /readyz says not ready until the gateway is assembled below.
  let readiness = (): Readiness =>
    readinessOf({ store: true, listening: listener !== undefined, warm: 'pending', keks: health.statuses() }, true);
  try {
    ops = await OpsEndpoint.start(config.ops, { metrics, readiness: () => readiness(), log });
    if (socketPath !== undefined) await mkdir(resolve(socketPath, '..'), { recursive: true, mode: 0o700 });
    listener = await Listener.start(
      {
        ...(socketPath !== undefined ? { socketPath } : {}),
        socketMode: config.listen.socket?.mode ?? 0o600,
        ...(config.listen.tcp ? { tcp: config.listen.tcp } : {}),
        ...(config.listen.tls
          ? {
              tls: {
                host: config.listen.tls.host,
                port: config.listen.tls.port,
                cert: await readFile(resolve(baseDir, config.listen.tls.cert)),
                key: await readFile(resolve(baseDir, config.listen.tls.key)),
                ca: await readFile(resolve(baseDir, config.listen.tls.ca)),
              },
            }
          : {}),
        maxConnections: config.limits.maxConnections,
        maxConnectionsPerPeer: config.limits.maxConnectionsPerPeer,
        maxBufferedBytes: config.limits.maxBufferedBytes,
        maxLineBytes: config.limits.maxLineBytes,
        maxInFlight: config.limits.maxInFlight,
        idleTimeoutMs: config.limits.idleTimeoutMs,
        requestTimeoutMs: config.limits.requestTimeoutMs,
      },
      (identity) => {
        const session = pipeline.open(identity);
        return (line) => session.handle(line);
      },
      log,
    );
    frontDoor = await startFrontDoor(config, pipeline, keys, new Secrets(keys, deks, store), log, baseDir);
  } catch (err) {
    await listener?.close();
    await ops?.close();
    await store.close();
    await audit?.close();
    throw err;
  }
  const serving = listener;
  metrics.attach({
    cache: deks.cache,
    connections: () => serving.stats().connections,
    ...(audit ? { auditDropped: () => audit.dropped } : {}),
    store,
    maxEncryptionsPerVersion: config.keys.maxEncryptionsPerVersion,
  });
  if (config.keys.autoCreate) {
    log.warn('keys are created on first use (keys.autoCreate): a development setting');
  }
  // Clients may connect already; ready (READY=1, /readyz) waits for warm-up, which tolerates every failure.
  const warmed = await warmUp(config.cache.warm, store, deks, config.cache.maxEntries, log);
  const canaryMs = config.kms.canaryIntervalMs;
  const inUse = () =>
    keksInUse({
      defaultKeks: keksByDefault,
      cached: () => deks.cache.keks(),
      health,
      // A KEK used within the last two canary periods (or ten minutes without a canary) is in use.
      recentMs: canaryMs > 0 ? 2 * canaryMs : 600_000,
      now: clockNow,
    });
  const canary = new Canary({ intervalMs: canaryMs, targets: () => inUse().map((s) => s.kek), adapters, health, log });
  if (canaryMs > 0) canary.start();
  metrics.attach({ keks: inUse, ready: () => readiness().ready });
  log.info(
    {
      dataDir,
      store: store.location,
      ...(opened.snapshot ? { snapshot: opened.snapshot, refreshMs: config.keystore.refreshMs } : {}),
      defaultKek: config.keys.defaultKek,
      cacheTtlMs: config.cache.ttlMs,
      storeLock: opened.lock,
    },
    'kmsgw ready',
  );

  let closing: Promise<void> | undefined;
  // From here on warm-up is done; until now the readiness above said `pending`.
  readiness = () => readinessOf({ store: true, listening: closing === undefined, warm: 'done', keks: inUse() }, canaryMs > 0);
  return {
    pipeline,
    cache: deks.cache,
    store,
    keys,
    kmsLimit,
    listener: serving,
    socketPath,
    log,
    reload: createReloader(
      { config, file: undefined, baseDir },
      {
        log,
        access,
        listener: {
          reconfigure: (limits) => serving.reconfigure(limits),
          // The front door serves listen.tls's certificate too: a reload renews both.
          setTlsCredentials: (tls) => {
            serving.setTlsCredentials(tls);
            frontDoor?.setTlsCredentials(tls);
          },
        },
        deks,
        keys,
        audit,
        ops: (next) => ops.reload(next.ops),
      },
    ),
    health,
    canary,
    warmed,
    readiness: () => readiness(),
    metrics,
    vault: frontDoor,
    get ops() {
      return ops?.current;
    },
    close() {
      closing ??= (async () => {
        await ops?.close();
        await frontDoor?.close();
        await canary.stop();
        await serving.close(config.limits.shutdownGraceMs);
        try {
          await keys.drain();
          deks.close();
          await adapters.close();
          await store.close();
        } finally {
          // Last, so requests that were still running when the listener closed are recorded.
          await audit?.close();
        }
      })();
      return closing;
    },
  };
}
