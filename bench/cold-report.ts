import type { ColdResult } from './cold.js';

type Verdict = { workload: string; target: string; pass: boolean | undefined };

const sign = (v: number): string => `${v >= 0 ? '+' : ''}${v.toFixed(1)}`;

/** The cold-key and memory table (README keeps the latest). */
export function coldReport(cold: ColdResult | { failed: string }): { lines: string[]; verdicts: Verdict[] } {
  if ('failed' in cold)
    return {
      lines: ['### Cold keys and memory', '', `Not measured: LocalStack did not start (${cold.failed.split('\n')[0]}).`],
      verdicts: [],
    };
  const verdicts: Verdict[] = [];
  const row = (workload: string, value: string, target: string, pass: boolean | undefined): string => {
    if (pass !== undefined) verdicts.push({ workload, target, pass });
    return `| ${workload} | ${value} | ${target} | ${pass === undefined ? '' : pass ? 'PASS' : '**MISS**'} |`;
  };
  const growth = cold.heldMixedEndMiB - cold.heldMixedStartMiB;
  const rssGrowth = cold.rssMixedEndMiB - cold.rssMixedStartMiB;
  const perDek = cold.rssFullMiB - cold.rssEmptyMiB;
  const ratio = cold.cachedGetOps / cold.directDecryptOps;
  const lines = [
    '### Cold keys and memory (AWS KMS on LocalStack, in process)',
    '',
    '| Measure | Result | Target | |',
    '|---|---:|---|---|',
    row(
      `${cold.oneKeyConcurrentGets} concurrent GETs of one cold key`,
      `${cold.oneKeyUnwraps} KMS unwrap(s)`,
      'exactly 1',
      cold.oneKeyUnwraps === 1,
    ),
    row(
      `${cold.distinctKeys} distinct cold keys at once`,
      `${(cold.distinctKeys / cold.distinctSeconds).toFixed(0)} keys/s, ${cold.distinctUnwraps} unwraps, at most ${cold.peakInFlight} in flight`,
      `in flight ≤ kms.maxConcurrent (${cold.maxConcurrent})`,
      cold.peakInFlight <= cold.maxConcurrent,
    ),
    row(
      'cached GET ÷ direct `Decrypt` to LocalStack from Node',
      `**${ratio.toFixed(0)}x** (${(cold.cachedGetOps / 1000).toFixed(0)} k/s vs ${cold.directDecryptOps.toFixed(0)}/s)`,
      '≥ 100x',
      ratio >= 100,
    ),
    row(
      `RSS with ${cold.cachedDeks.toLocaleString('en')} cached DEKs, above an empty cache`,
      `${perDek.toFixed(1)} MiB (${cold.rssEmptyMiB.toFixed(0)} → ${cold.rssFullMiB.toFixed(0)} MiB)`,
      '≤ 64 MiB',
      perDek <= 64,
    ),
    row(
      `Memory held over a ${cold.mixedSeconds} s mixed GET/ENC/DEC run (heap + Buffers after GC; RSS)`,
      `${sign(growth)} MiB (${cold.heldMixedStartMiB.toFixed(0)} → ${cold.heldMixedEndMiB.toFixed(0)} MiB); RSS ${sign(rssGrowth)} MiB`,
      'no growth (held ≤ +4 MiB)',
      growth <= 4,
    ),
  ];
  return { lines, verdicts };
}
