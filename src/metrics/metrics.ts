import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { KmsCall } from '../../adapters/guard.js';
import { KEK_STATES, type KekStatus } from '../../adapters/health.js';
import { kekScheme } from '../../adapters/registry.js';
import type { DekCacheStats } from '../cache/dek-cache.js';
import { STORE_OPERATIONS, STORE_OUTCOMES, type StoreStats } from '../keystore/key-store.js';
import type { KeyRecord } from '../keystore/types.js';
import type { RequestMeter } from '../pipeline/pipeline.js';
import { Tally, TallyHistogram } from './tally.js';

/** Every metric the gateway defines, once (docs/operations.md describes each; alerts and the dashboard use these). */
export const METRIC = {
  requests: 'kmsgw_requests_total',
  requestDuration: 'kmsgw_request_duration_seconds',
  kmsRequests: 'kmsgw_kms_requests_total',
  kmsDuration: 'kmsgw_kms_request_duration_seconds',
  cacheEntries: 'kmsgw_cache_entries',
  cacheHits: 'kmsgw_cache_hits_total',
  cacheMisses: 'kmsgw_cache_misses_total',
  cacheStaleServed: 'kmsgw_cache_stale_served_total',
  connections: 'kmsgw_connections',
  kekState: 'kmsgw_kek_state',
  nonceBudget: 'kmsgw_nonce_budget_used_ratio',
  auditDropped: 'kmsgw_audit_records_dropped_total',
  storeOperations: 'kmsgw_store_operations_total',
  storeConflicts: 'kmsgw_store_conflicts_total',
  ready: 'kmsgw_ready',
} as const;

/** The gateway's own metric names (the histograms also export `_bucket`, `_sum` and `_count`). */
export const METRIC_NAMES: readonly string[] = Object.values(METRIC);

/** Request latency buckets, in seconds: a cached GET takes microseconds, a cold one a KMS round trip. */
export const REQUEST_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
] as const;
/** KMS call latency buckets, in seconds. */
export const KMS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** What the gateway-wide metrics are read from at scrape time; each part may be attached later, or never. */
export interface MetricSources {
  readonly cache?: { readonly stats: Readonly<DekCacheStats>; readonly size: number };
  readonly connections?: () => number;
  readonly keks?: () => readonly KekStatus[];
  readonly auditDropped?: () => number;
  /** The key records this gateway holds in memory, and the store's call counters. */
  readonly store?: { readonly stats: StoreStats; heldRecords(): Iterable<KeyRecord> };
  /** `keys.maxEncryptionsPerVersion`: the denominator of the nonce budget. */
  readonly maxEncryptionsPerVersion?: number;
  /** Whether `/readyz` would answer 200 now (a cached state, no KMS call). */
  readonly ready?: () => boolean;
}

/** Counts of one verb: OK apart (the common case, no map lookup), errors by code, and latency. */
interface VerbCounts {
  readonly labels: { readonly verb: string };
  ok: number;
  readonly errors: Map<string, number>;
  readonly tally: Tally;
}

/**
 * One gateway's metrics, in a registry of its own (never prom-client's global one), with the
 * default process metrics. The hot path only adds to plain numbers (`meter`); prom-client objects
 * are filled from those numbers, and from the counters the cache, store, listener and audit log
 * already keep, when `/metrics` is scraped.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  /** For `PipelineOptions.meter`; undefined when request metrics are off (`ops.metrics: false`). */
  readonly meter: RequestMeter | undefined;
  /** For `GuardOptions.observe`; undefined when KMS metrics are off. */
  readonly observeKms: ((call: KmsCall) => void) | undefined;
  private sources: MetricSources = {};
  private readonly verbs = new Map<string, VerbCounts>();
  private last: VerbCounts | undefined;

  /** @param options.calls false: no request or KMS metrics are collected (the benchmark's "off"). */
  constructor(options: { readonly calls?: boolean } = {}) {
    const calls = options.calls ?? true;
    const registers = [this.registry];
    const src = (): MetricSources => this.sources;
    const verbs = this.verbs;

    new Counter({
      name: METRIC.requests,
      help: 'Requests answered, by verb (invalid: the line did not parse) and reply code (OK or the ERR code).',
      labelNames: ['verb', 'code'] as const,
      registers,
      collect() {
        this.reset();
        for (const v of verbs.values()) {
          if (v.ok > 0) this.inc({ verb: v.labels.verb, code: 'OK' }, v.ok);
          for (const [code, n] of v.errors) this.inc({ verb: v.labels.verb, code }, n);
        }
      },
    });
    this.registry.registerMetric(
      new TallyHistogram(
        {
          name: METRIC.requestDuration,
          help: 'Time from reading a request line to its reply, in seconds, by verb (replies from memory are timed one in 16, each sample counting 16).',
          labelNames: ['verb'] as const,
          buckets: REQUEST_BUCKETS,
        },
        () => [...verbs.values()].map((v) => ({ labels: v.labels, tally: v.tally })),
      ),
    );
    const kmsRequests = new Counter({
      name: METRIC.kmsRequests,
      help: 'KMS calls (each attempt, and each call refused by the open breaker), by adapter (KEK URI scheme), operation and outcome.',
      labelNames: ['adapter', 'operation', 'outcome'] as const,
      registers,
    });
    const kmsDuration = new Histogram({
      name: METRIC.kmsDuration,
      help: 'Duration of KMS call attempts, in seconds, by adapter and operation.',
      labelNames: ['adapter', 'operation'] as const,
      buckets: [...KMS_BUCKETS],
      registers,
    });

    new Gauge({
      name: METRIC.cacheEntries,
      help: 'Unwrapped DEKs held in memory (stale ones kept for stale-if-error included).',
      registers,
      collect() {
        this.set(src().cache?.size ?? 0);
      },
    });
    fromCount(METRIC.cacheHits, 'DEK lookups served from the cache within the TTL.', registers, () => src().cache?.stats.hits);
    fromCount(
      METRIC.cacheMisses,
      'DEK lookups that needed an unwrap (or joined one already running).',
      registers,
      () => src().cache?.stats.misses,
    );
    fromCount(
      METRIC.cacheStaleServed,
      'DEKs served past their TTL because the KMS was unavailable or throttling (cache.staleIfErrorMs).',
      registers,
      () => src().cache?.stats.staleServed,
    );
    new Gauge({
      name: METRIC.connections,
      help: 'Client connections open now, all listeners together.',
      registers,
      collect() {
        this.set(src().connections?.() ?? 0);
      },
    });
    new Gauge({
      name: METRIC.kekState,
      help: 'Last known state of each KEK in use: 1 for its current state, 0 for the others (all 0 while unknown).',
      labelNames: ['kek', 'state'] as const,
      registers,
      collect() {
        this.reset();
        for (const status of src().keks?.() ?? []) {
          for (const state of KEK_STATES) this.set({ kek: status.kek, state }, status.state === state ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: METRIC.nonceBudget,
      help: 'Highest share of keys.maxEncryptionsPerVersion reserved by any key version this gateway holds in memory (0 to 1).',
      registers,
      collect() {
        const { store, maxEncryptionsPerVersion } = src();
        this.set(store && maxEncryptionsPerVersion ? nonceBudgetUsed(store.heldRecords(), maxEncryptionsPerVersion) : 0);
      },
    });
    fromCount(
      METRIC.auditDropped,
      'Audit records dropped (audit.failOpen after a write failure, or after the log closed).',
      registers,
      () => src().auditDropped?.(),
    );
    new Counter({
      name: METRIC.storeOperations,
      help: 'Key store backend calls, by operation (read, write, list page) and outcome (ok, error, timeout, backoff: not made during an outage back-off).',
      labelNames: ['operation', 'outcome'] as const,
      registers,
      collect() {
        this.reset();
        const stats = src().store?.stats;
        if (stats === undefined) return;
        for (const operation of STORE_OPERATIONS) {
          for (const outcome of STORE_OUTCOMES) {
            const n = stats.operations[operation][outcome];
            if (n > 0) this.inc({ operation, outcome }, n);
          }
        }
      },
    });
    fromCount(
      METRIC.storeConflicts,
      'Key record writes that lost a compare-and-swap to another writer and were retried.',
      registers,
      () => src().store?.stats.conflicts,
    );
    new Gauge({
      name: METRIC.ready,
      help: 'Whether the gateway is ready (1) or not (0), as /readyz answers: store open, listeners up, warm-up done, every KEK in use ok.',
      registers,
      collect() {
        this.set(src().ready?.() === true ? 1 : 0);
      },
    });
    for (const metric of processMetrics()) this.registry.registerMetric(metric);

    this.meter = calls ? this.count.bind(this) : undefined;
    this.observeKms = calls
      ? (call) => {
          const adapter = kekScheme(call.kek) ?? 'unknown';
          kmsRequests.inc({ adapter, operation: call.op, outcome: call.outcome });
          // A call the breaker refused never reached the KMS: it has no latency to tell.
          if (call.outcome !== 'breaker_open') kmsDuration.observe({ adapter, operation: call.op }, call.seconds);
        }
      : undefined;
  }

  /** Adds (or replaces) sources of the gateway-wide metrics. */
  attach(sources: MetricSources): void {
    this.sources = { ...this.sources, ...sources };
  }

  /** The Prometheus text exposition of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private count(verb: string, code: string, seconds: number, weight: number): void {
    // Requests come in runs of one verb (a PostgreSQL hook, a pipelined batch): skip the map then.
    let v = verb === this.last?.labels.verb ? this.last : this.verbs.get(verb);
    if (v === undefined) {
      v = { labels: { verb }, ok: 0, errors: new Map(), tally: new Tally(REQUEST_BUCKETS) };
      this.verbs.set(verb, v);
    }
    this.last = v;
    if (code === 'OK') v.ok++;
    else v.errors.set(code, (v.errors.get(code) ?? 0) + 1);
    if (weight > 0) v.tally.observe(seconds, weight);
  }
}

/** A counter without labels whose value is read from a plain counter kept elsewhere. */
function fromCount(name: string, help: string, registers: Registry[], read: () => number | undefined): void {
  new Counter({
    name,
    help,
    registers,
    collect() {
      this.reset();
      const n = read() ?? 0;
      if (n > 0) this.inc(n);
    },
  });
}

/**
 * The highest used/limit over the versions of `records`, from each version's stored `encryptions`:
 * the reservation counter of the shared encryption budget (src/crypto/budget.ts), an upper bound of
 * the encryptions of every gateway together (ahead by at most the blocks claimed and not yet used).
 */
export function nonceBudgetUsed(records: Iterable<KeyRecord>, limit: number): number {
  let highest = 0;
  for (const record of records) {
    for (const version of record.versions) {
      const used = (version.encryptions ?? 0) / limit;
      if (used > highest) highest = used;
    }
  }
  return Math.min(1, highest);
}

let shared: Metric[] | undefined;

/**
 * The default process metrics, made once per process and registered in each gateway's registry:
 * they describe the process, and each set starts its own event-loop monitor and GC observer.
 */
function processMetrics(): Metric[] {
  if (shared === undefined) {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    shared = registry.getMetricsAsArray() as unknown as Metric[];
  }
  return shared;
}
