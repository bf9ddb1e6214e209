import { Histogram } from 'prom-client';

/**
 * A histogram kept in plain numbers: `observe` is a bucket search and three additions, with no
 * label hashing and no allocation, so it can sit on the cached-GET path. prom-client's own
 * `observe` hashes the label set on every call; this one is read only when scraped.
 */
export class Tally {
  /** Observations per bucket (not cumulative); the last slot is past the largest bound (+Inf). */
  readonly counts: Float64Array;
  count = 0;
  sum = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  /** Adds `weight` observations of `value` (a sampled observation stands for the ones not timed). */
  observe(value: number, weight = 1): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + weight;
    this.count += weight;
    this.sum += value * weight;
  }
}

/** One labelled series of a `TallyHistogram`. */
export interface TallySeries<L extends string> {
  readonly labels: Readonly<Record<L, string>>;
  readonly tally: Tally;
}

interface ExportedValue {
  readonly metricName: string;
  readonly labels: Record<string, string | number>;
  readonly value: number;
}

/**
 * A prom-client histogram whose series are read, at scrape time, from `Tally`s kept elsewhere.
 * Registered like any other metric; its own `observe` is not used.
 */
export class TallyHistogram<L extends string> extends Histogram<L> {
  private readonly metricName: string;
  private readonly metricHelp: string;

  constructor(
    config: { name: string; help: string; labelNames: readonly L[]; buckets: readonly number[] },
    private readonly series: () => Iterable<TallySeries<L>>,
  ) {
    super({ name: config.name, help: config.help, labelNames: config.labelNames, buckets: [...config.buckets], registers: [] });
    this.metricName = config.name;
    this.metricHelp = config.help;
  }

  override get(): ReturnType<Histogram<L>['get']> {
    return this.getForPromString() as unknown as ReturnType<Histogram<L>['get']>;
  }

  /** What the registry writes out (prom-client calls this in preference to `get`). */
  getForPromString(): Promise<{ name: string; help: string; type: 'histogram'; values: ExportedValue[]; aggregator: 'sum' }> {
    const values: ExportedValue[] = [];
    for (const { labels, tally } of this.series()) {
      let cumulative = 0;
      tally.bounds.forEach((bound, i) => {
        cumulative += tally.counts[i] as number;
        values.push({ metricName: `${this.metricName}_bucket`, labels: { ...labels, le: bound }, value: cumulative });
      });
      values.push({ metricName: `${this.metricName}_bucket`, labels: { ...labels, le: '+Inf' }, value: tally.count });
      values.push({ metricName: `${this.metricName}_sum`, labels: { ...labels }, value: tally.sum });
      values.push({ metricName: `${this.metricName}_count`, labels: { ...labels }, value: tally.count });
    }
    return Promise.resolve({ name: this.metricName, help: this.metricHelp, type: 'histogram', values, aggregator: 'sum' });
  }
}
