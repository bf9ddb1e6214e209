import parsePrometheusTextFormat, { type ParsedFamily } from 'parse-prometheus-text-format';
import { expect } from 'vitest';

/** One scrape of `/metrics`, parsed by a Prometheus text parser. */
export class Scrape {
  readonly families: Map<string, ParsedFamily>;

  constructor(readonly text: string) {
    this.families = new Map(parsePrometheusTextFormat(text).map((f) => [f.name, f]));
  }

  family(name: string): ParsedFamily {
    const family = this.families.get(name);
    expect(family, `${name} is exported`).toBeDefined();
    return family as ParsedFamily;
  }

  /** The value of a counter or gauge sample whose labels include `labels`; 0 when there is none. */
  value(name: string, labels: Record<string, string> = {}): number {
    const matching = this.family(name).metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
    return matching.reduce((sum, m) => sum + Number(m.value), 0);
  }

  /**
   * A histogram's `_count` for one label set (read from the text: the parser folds labelled
   * histogram series together).
   */
  histogramCount(name: string, labels: string): number {
    expect(this.family(name).type).toBe('HISTOGRAM');
    const line = this.text.split('\n').find((l) => l.startsWith(`${name}_count{${labels}} `));
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
  }
}

/** GET (or another method on) the ops listener. */
export async function opsGet(port: number, path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}${path}`, init);
}

export async function scrape(port: number): Promise<Scrape> {
  const res = await opsGet(port, '/metrics');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
  return new Scrape(await res.text());
}
