/** The start-up part's table, verdicts and raw summary (see startup.ts for what is measured). */
import { max, median, min } from './common.js';
import type { KindResult, StartSample, StartupResult } from './startup.js';

/** Start-up with N keys may take at most this many times start-up with an empty store. */
export const STARTUP_RATIO_TARGET = 2;

const KIND_LABEL = { file: 'file', s3: 'S3 (LocalStack)' } as const;

const mib = (kib: number): string => (kib / 1024).toFixed(0);
const ms1 = (v: number): string => v.toFixed(1);
const range = (v: readonly number[], f: (x: number) => string): string => `${f(median(v))} (${f(min(v))}–${f(max(v))})`;
/** (max − min) ÷ median, in %: how far apart the rounds of one measurement were. */
const spread = (v: readonly number[]): number => (100 * (max(v) - min(v))) / median(v);

function percentile(values: readonly number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? Number.NaN;
}

function ratios(k: KindResult): number[] {
  return k.full.map((f, i) => f.ms / (k.empty[i] as StartSample).ms);
}

export interface StartupReport {
  readonly lines: string[];
  readonly verdicts: Array<{ workload: string; target: string; pass: boolean }>;
  readonly summary: Record<string, unknown>;
}

export function startupReport(r: StartupResult, load: { before: number; after: number; elapsedS: number }): StartupReport {
  const n = r.keys.toLocaleString('en-US');
  const lines: string[] = [];
  const verdicts: StartupReport['verdicts'] = [];
  const summary: Record<string, unknown> = {};
  lines.push(`### Start-up with ${n} keys`);
  lines.push('');
  lines.push(
    '`node bin/kmsgw.js serve --config <file>` (fresh process, this Node) from spawn until a PING over its Unix socket ' +
      `answers PONG (connect polled every 5 ms), with an empty store and with ${n} key records; the two alternate, ` +
      `${r.rounds} rounds after one warm-up start each. Ratio = ${n} keys ÷ empty of the same round. ` +
      `RSS is the gateway's VmRSS after PONG, then after ${r.gets.toLocaleString('en-US')} GETs of distinct keys ` +
      '(one at a time on one connection, each a cold read from the store and an unwrap with a local KEK), with the peak (VmHWM). ' +
      'Times are medians over rounds, ranges min–max; GET percentiles pool every round.',
  );
  lines.push('');
  lines.push(
    `| Store | empty: start-up ms | ${n} keys: start-up ms | ${n} ÷ empty | RSS after PONG MiB, empty / ${n} | ` +
      `RSS after ${r.gets.toLocaleString('en-US')} GETs MiB (peak) | first GET after start ms | later cold GETs p50 / p99 ms | Target | |`,
  );
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---|---|');
  for (const k of r.kinds) {
    const ratio = ratios(k);
    const pass = median(ratio) <= STARTUP_RATIO_TARGET;
    const target = `≤ ${STARTUP_RATIO_TARGET}x empty`;
    verdicts.push({ workload: `start-up, ${KIND_LABEL[k.kind]} store, ${n} keys`, target, pass });
    const gets = k.full.flatMap((s) => s.getMs ?? []);
    const first = k.full.map((s) => s.firstGetMs ?? Number.NaN);
    lines.push(
      `| ${KIND_LABEL[k.kind]} | ${range(
        k.empty.map((s) => s.ms),
        (v) => v.toFixed(0),
      )} | ${range(
        k.full.map((s) => s.ms),
        (v) => v.toFixed(0),
      )} | **${median(ratio).toFixed(2)}x** (${min(ratio).toFixed(2)}–${max(ratio).toFixed(2)}) | ` +
        `${mib(median(k.empty.map((s) => s.rssKiB)))} / ${mib(median(k.full.map((s) => s.rssKiB)))} | ` +
        `${mib(median(k.full.map((s) => s.rssAfterGetsKiB ?? Number.NaN)))} (${mib(median(k.full.map((s) => s.hwmAfterGetsKiB ?? Number.NaN)))}) | ` +
        `${range(first, ms1)} | ${ms1(percentile(gets, 0.5))} / ${ms1(percentile(gets, 0.99))} | ${target} | ${pass ? 'PASS' : '**MISS**'} |`,
    );
    summary[k.kind] = {
      urls: k.url,
      setup: k.setup,
      ratio: { median: median(ratio), min: min(ratio), max: max(ratio), rounds: ratio },
      startupMs: { empty: k.empty.map((s) => s.ms), full: k.full.map((s) => s.ms) },
      rssKiB: {
        emptyAfterPong: k.empty.map((s) => s.rssKiB),
        fullAfterPong: k.full.map((s) => s.rssKiB),
        fullAfterGets: k.full.map((s) => s.rssAfterGetsKiB),
        fullPeakAfterGets: k.full.map((s) => s.hwmAfterGetsKiB),
      },
      firstGetMs: first,
      laterGetMs: { p50: percentile(gets, 0.5), p90: percentile(gets, 0.9), p99: percentile(gets, 0.99), count: gets.length },
    };
  }
  for (const s of r.skipped) {
    lines.push(`| ${KIND_LABEL[s.kind]} | not measured: ${s.reason.split('\n')[0]} | | | | | | | ≤ ${STARTUP_RATIO_TARGET}x empty | — |`);
  }
  lines.push('');
  const noise = r.kinds
    .map((k) => {
      const ratio = ratios(k);
      return (
        `${KIND_LABEL[k.kind]}: rounds spread ${spread(k.empty.map((s) => s.ms)).toFixed(0)} % (empty), ` +
        `${spread(k.full.map((s) => s.ms)).toFixed(0)} % (${n} keys), ratio ${min(ratio).toFixed(2)}–${max(ratio).toFixed(2)}`
      );
    })
    .join('; ');
  if (r.fileOpenMs) {
    const o = r.fileOpenMs;
    lines.push(
      `File store opened alone (\`FileBackend.open\` + \`close\` in the bench process: the folder's lock and the removal of ` +
        `temporary files a crash left, which lists the folder): ${range(o.empty, ms1)} ms empty, ${range(o.full, ms1)} ms with ${n} keys.`,
    );
    lines.push('');
    summary.fileOpenMs = o;
  }
  lines.push(
    `Noise: spread = (max − min) ÷ median of the rounds. ${noise}. 1-min load average ${load.before.toFixed(2)} before, ` +
      `${load.after.toFixed(2)} after (start-up part took ${load.elapsedS.toFixed(0)} s).`,
  );
  lines.push('');
  lines.push(
    `Stores: ${r.kinds.map((k) => `${KIND_LABEL[k.kind]} ${k.setup.note} (${(k.setup.bytes / r.keys).toFixed(0)} B per record)`).join('; ')}` +
      (r.localstack
        ? `; LocalStack ${r.localstack.endpoint} ${r.localstack.reused ? 'reused (left running)' : `started for the bench in ${((r.localstack.startMs ?? 0) / 1000).toFixed(0)} s and stopped after`}`
        : '') +
      `. Records are real: a random DEK wrapped by the local KEK adapter, its commitment tag, the KeyStore's serializer.`,
  );
  for (const s of r.skipped) lines.push('', `${KIND_LABEL[s.kind]} row not measured: ${s.reason}`);
  return { lines, verdicts, summary: { keys: r.keys, rounds: r.rounds, gets: r.gets, load, ...summary, skipped: r.skipped } };
}
