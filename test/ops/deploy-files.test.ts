import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { GatewayMetrics, METRIC, METRIC_NAMES } from '../../src/metrics/metrics.js';

const ROOT = resolve(import.meta.dirname, '../..');

/** PromQL words that are not metric names: functions, aggregations, keywords. */
const PROMQL_WORDS = new Set([
  'sum',
  'min',
  'max',
  'avg',
  'count',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'rate',
  'irate',
  'increase',
  'histogram_quantile',
  'vector',
  'le',
]);

/** Every metric name a PromQL expression reads (label matchers, strings, ranges and Grafana variables removed). */
function metricNamesIn(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\$\w+/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  const names = bare.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? [];
  return [...new Set(names.filter((n) => !PROMQL_WORDS.has(n)))];
}

/** The names /metrics exports: the gateway's (with the histogram series) and the default process metrics. */
function exported(): Set<string> {
  const names = new Set<string>(['up']); // Prometheus's own, per scrape target
  for (const name of METRIC_NAMES) names.add(name);
  for (const name of [METRIC.requestDuration, METRIC.kmsDuration]) for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
  const registry = new GatewayMetrics().registry;
  for (const metric of registry.getMetricsAsArray() as unknown as Array<{ name: string }>) names.add(metric.name);
  return names;
}

describe('deploy/ monitoring files', () => {
  const known = exported();

  it('the expression checker finds metric names and can fail', () => {
    expect(metricNamesIn('sum by (code) (rate(kmsgw_requests_total{instance=~"$instance"}[$__rate_interval]))')).toEqual([
      'kmsgw_requests_total',
    ]);
    expect(metricNamesIn('histogram_quantile(0.99, sum by (le, verb) (rate(kmsgw_x_bucket[5m]))) > 0.75')).toEqual(['kmsgw_x_bucket']);
    expect(known.has('kmsgw_x_bucket')).toBe(false);
    expect(known.has('process_cpu_seconds_total')).toBe(true);
  });

  it('prometheus-rules.yaml parses; every expression reads only metrics the gateway exports; the issue alerts are there', () => {
    const doc = parseYaml(readFileSync(resolve(ROOT, 'deploy/prometheus-rules.yaml'), 'utf8')) as {
      groups: Array<{ name: string; rules: Array<{ alert: string; expr: string; labels: { severity: string } }> }>;
    };
    const rules = doc.groups.flatMap((g) => g.rules);
    expect(rules.length).toBeGreaterThanOrEqual(6);
    for (const rule of rules) {
      const names = metricNamesIn(rule.expr);
      expect(names.length, rule.alert).toBeGreaterThan(0);
      for (const name of names) expect(known.has(name), `${rule.alert} reads ${name}`).toBe(true);
      expect(['warning', 'critical']).toContain(rule.labels.severity);
    }
    const byName = new Map(rules.map((r) => [r.alert, r.expr]));
    expect(byName.get('KmsgwKekDenied')).toContain('state="denied"');
    expect(byName.get('KmsgwKmsUnavailable')).toContain('unavailable');
    expect(byName.get('KmsgwServingStale')).toContain(METRIC.cacheStaleServed);
    expect(byName.get('KmsgwNonceBudgetHigh')).toBe(`${METRIC.nonceBudget} > 0.75`);
    expect(byName.get('KmsgwAuditRecordsDropped')).toContain(METRIC.auditDropped);
    expect(byName.get('KmsgwDown')).toContain('up{');
    expect(byName.get('KmsgwNotReady')).toContain(METRIC.ready);
  });

  it('docs/operations.md lists every metric, and every alert with its expression as in the rules file', () => {
    const doc = readFileSync(resolve(ROOT, 'docs/operations.md'), 'utf8').replaceAll('\\|', '|');
    for (const name of METRIC_NAMES) expect(doc, name).toContain(`| \`${name}\``);
    const rules = (
      parseYaml(readFileSync(resolve(ROOT, 'deploy/prometheus-rules.yaml'), 'utf8')) as {
        groups: Array<{ rules: Array<{ alert: string; expr: string }> }>;
      }
    ).groups.flatMap((g) => g.rules);
    for (const rule of rules) {
      const row = doc.split('\n').find((line) => line.startsWith(`| \`${rule.alert}\``));
      expect(row, rule.alert).toContain(`\`${rule.expr}\``);
    }
  });

  it('grafana-dashboard.json parses; every panel query reads only exported metrics; the issue panels are there', () => {
    const dashboard = JSON.parse(readFileSync(resolve(ROOT, 'deploy/grafana-dashboard.json'), 'utf8')) as {
      title: string;
      uid: string;
      schemaVersion: number;
      panels: Array<{ id: number; type: string; title: string; targets?: Array<{ expr: string }> }>;
      templating: { list: Array<{ name: string; query: unknown }> };
    };
    expect(dashboard).toMatchObject({ title: 'kmsgw', uid: 'kmsgw-overview' });
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const exprs = dashboard.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
    const read = new Set<string>();
    for (const expr of exprs) {
      for (const name of metricNamesIn(expr)) {
        expect(known.has(name), `${expr} reads ${name}`).toBe(true);
        read.add(name);
      }
    }
    // Every gateway metric is on the dashboard.
    for (const name of METRIC_NAMES) {
      const histogram = name === METRIC.requestDuration || name === METRIC.kmsDuration;
      expect(read.has(histogram ? `${name}_bucket` : name), name).toBe(true);
    }
  });
});
