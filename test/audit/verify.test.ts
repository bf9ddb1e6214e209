import { createHash } from 'node:crypto';
import { appendFile, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ZERO_HASH } from '../../src/audit/chain.js';
import { describeResult, verifyAuditFile, verifyAuditLog } from '../../src/audit/verify.js';
import { useTmpDirs } from '../helpers/tmp.js';
import { fileLines, writeLines, writeRecords } from './util.js';

const tmp = useTmpDirs();
const N = 8;
const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

async function logOf(n = N): Promise<{ file: string; lines: string[] }> {
  const file = join(await tmp(), 'audit.log');
  await writeRecords(file, n);
  return { file, lines: await fileLines(file) };
}

/** Verifies `lines` written as a file. */
async function verifyLines(lines: readonly string[]) {
  const file = join(await tmp(), 'edited.log');
  await writeLines(file, lines);
  return verifyAuditFile(file);
}

function alter(line: string, field: string, value: unknown): string {
  return JSON.stringify({ ...JSON.parse(line), [field]: value });
}

describe('audit verify: an intact chain', () => {
  it('N records: prev links each line to the one before, seq counts from 1', async () => {
    const { file, lines } = await logOf();
    expect(lines).toHaveLength(N);
    const parsed = lines.map((l) => JSON.parse(l));
    expect(parsed[0].prev).toBe(ZERO_HASH);
    for (let i = 1; i < N; i++) expect(parsed[i].prev).toBe(sha256(lines[i - 1] as string));
    expect(parsed.map((p) => p.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const result = await verifyAuditFile(file);
    expect(result).toMatchObject({ ok: true, records: N, lines: N, restarts: [] });
    expect(describeResult(result)).toBe(`${N} records, chain intact`);
  });

  it('an empty file is intact (0 records)', async () => {
    const file = join(await tmp(), 'empty.log');
    await writeFile(file, '');
    expect(await verifyAuditFile(file)).toMatchObject({ ok: true, records: 0 });
  });

  it('reads any chunking the same way (lines split across chunks, one byte at a time)', async () => {
    const { file } = await logOf(3);
    const bytes = await readFile(file);
    async function* oneByte() {
      for (const b of bytes) yield Uint8Array.of(b);
    }
    expect(await verifyAuditLog(oneByte())).toMatchObject({ ok: true, records: 3 });
  });
});

describe('audit verify: names the first line that was tampered with', () => {
  it('a field altered in line k names line k', async () => {
    const { lines } = await logOf();
    for (const k of [1, 4, N - 1]) {
      const edited = [...lines];
      edited[k - 1] = alter(lines[k - 1] as string, 'outcome', 'FORBIDDEN');
      const r = await verifyLines(edited);
      expect(r.ok).toBe(false);
      expect(r.problem?.line, `altered line ${k}`).toBe(k);
      expect(r.problem?.reason).toMatch(/altered/);
    }
  });

  it('a seq altered in line k names line k', async () => {
    const { lines } = await logOf();
    const edited = [...lines];
    edited[4] = alter(lines[4] as string, 'seq', 42);
    expect((await verifyLines(edited)).problem).toMatchObject({ line: 5, reason: expect.stringMatching(/seq 42 where 5 was expected/) });
  });

  it('a line removed at k names line k', async () => {
    const { lines } = await logOf();
    for (const k of [1, 3, N - 1]) {
      const edited = lines.filter((_, i) => i !== k - 1);
      const r = await verifyLines(edited);
      expect(r.problem?.line, `removed line ${k}`).toBe(k);
    }
  });

  it('two lines swapped name the first of them', async () => {
    const { lines } = await logOf();
    for (const [a, b] of [
      [2, 3],
      [2, 6],
      [1, N],
      [N - 1, N],
    ] as const) {
      const edited = [...lines];
      edited[a - 1] = lines[b - 1] as string;
      edited[b - 1] = lines[a - 1] as string;
      expect((await verifyLines(edited)).problem?.line, `swapped ${a} and ${b}`).toBe(a);
    }
  });

  it('an inserted line is named', async () => {
    const { lines } = await logOf();
    // A made-up record with a plausible seq.
    const forged = alter(lines[2] as string, 'keyId', 'app/forged');
    const edited = [...lines.slice(0, 3), forged, ...lines.slice(3)];
    expect((await verifyLines(edited)).problem?.line).toBe(4);
    // A forged record that chains correctly to the line before it: the next line no longer does.
    const chained = JSON.stringify({ ...JSON.parse(lines[3] as string), keyId: 'app/forged', prev: sha256(lines[2] as string) });
    const edited2 = [...lines.slice(0, 3), chained, ...lines.slice(3)];
    expect((await verifyLines(edited2)).problem).toMatchObject({ line: 4, reason: expect.stringMatching(/inserted/) });
    // A copy of an earlier line.
    const edited3 = [...lines.slice(0, 5), lines[1] as string, ...lines.slice(5)];
    expect((await verifyLines(edited3)).problem?.line).toBe(6);
  });

  it('the last line cut short (a torn write) is reported as not JSON', async () => {
    const { file, lines } = await logOf();
    const size = (await readFile(file)).length;
    await truncate(file, size - 20);
    const r = await verifyAuditFile(file);
    expect(r.ok).toBe(false);
    expect(r.problem).toMatchObject({ line: N, reason: expect.stringMatching(/not valid JSON: the last line was cut short/) });
    expect(r.records).toBe(N - 1);
    expect(lines).toHaveLength(N);
  });

  it('a line that is not JSON in the middle, or JSON that is not a record, is named', async () => {
    const { lines } = await logOf();
    const garbled = [...lines];
    garbled[2] = (lines[2] as string).slice(0, 30);
    expect((await verifyLines(garbled)).problem).toMatchObject({ line: 3, reason: 'not valid JSON' });
    const foreign = [...lines];
    foreign[2] = '{"hello":"world"}';
    expect((await verifyLines(foreign)).problem).toMatchObject({ line: 3, reason: expect.stringMatching(/not an audit record/) });
    const blank = [...lines.slice(0, 2), '', ...lines.slice(2)];
    expect((await verifyLines(blank)).problem?.line).toBe(3);
  });

  it('a file that does not start a chain is named at line 1', async () => {
    const { lines } = await logOf();
    expect((await verifyLines(lines.slice(2))).problem).toMatchObject({ line: 1, reason: expect.stringMatching(/64 zeros/) });
  });

  it('a very long line is hashed and refused without being held in memory', async () => {
    const { file } = await logOf(2);
    await appendFile(file, Buffer.alloc(3 * 1024 * 1024, 0x41));
    expect((await verifyAuditFile(file)).problem).toMatchObject({ line: 3, reason: expect.stringMatching(/3145728 bytes long/) });
  });

  it('property: any one removal, swap, insertion or alteration (not of the last line) names its line', async () => {
    const { lines } = await logOf(12);
    const n = lines.length;
    const edit = fc.oneof(
      fc.record({ kind: fc.constant('remove' as const), k: fc.integer({ min: 1, max: n - 1 }) }),
      fc.record({ kind: fc.constant('alter' as const), k: fc.integer({ min: 1, max: n - 1 }) }),
      fc.record({ kind: fc.constant('swap' as const), k: fc.integer({ min: 1, max: n - 1 }), d: fc.integer({ min: 1, max: n - 1 }) }),
      fc.record({ kind: fc.constant('insert' as const), k: fc.integer({ min: 1, max: n }), j: fc.integer({ min: 1, max: n }) }),
    );
    await fc.assert(
      fc.asyncProperty(edit, async (e) => {
        const edited = [...lines];
        let expected = e.k;
        let alsoOk: number | undefined;
        if (e.kind === 'remove') edited.splice(e.k - 1, 1);
        if (e.kind === 'alter') edited[e.k - 1] = alter(lines[e.k - 1] as string, 'client', 'uid:0');
        if (e.kind === 'swap') {
          const m = Math.min(n, e.k + e.d);
          if (m === e.k) return;
          edited[e.k - 1] = lines[m - 1] as string;
          edited[m - 1] = lines[e.k - 1] as string;
        }
        if (e.kind === 'insert') {
          edited.splice(e.k - 1, 0, lines[e.j - 1] as string);
          // A copy of the line that follows it: two identical lines, either may be named.
          if (e.j === e.k) alsoOk = e.k + 1;
          expected = e.k;
        }
        const r = await verifyLines(edited);
        expect(r.ok).toBe(false);
        expect([expected, alsoOk]).toContain(r.problem?.line);
      }),
      { numRuns: 60 },
    );
  });
});

describe('describeResult', () => {
  it('reports a chain restart after a torn line without failing', async () => {
    const { lines } = await logOf(2);
    const torn = '{"seq":3,"prev":"ab';
    const restart = JSON.stringify({
      seq: 3,
      prev: sha256(torn),
      time: '2026-11-27T12:00:00.000Z',
      event: 'chain-restart',
      reason: 'test',
    });
    const after = JSON.stringify({ seq: 4, prev: sha256(restart), time: 'x', client: 'c', verb: 'PING', outcome: 'OK', latencyMs: 0 });
    const r = await verifyLines([...lines, torn, restart, after]);
    expect(r).toMatchObject({ ok: true, records: 4, restarts: [{ line: 4, tornLine: 3, tornBytes: torn.length }] });
    expect(describeResult(r)).toBe('4 records, chain intact; 1 chain restart after a torn line (line 3)');
    // The restart must follow the torn line's own bytes, and take the next seq.
    const wrongSeq = JSON.stringify({ ...JSON.parse(restart), seq: 4 });
    expect((await verifyLines([...lines, torn, wrongSeq])).problem?.line).toBe(4);
    expect((await verifyLines([...lines, `${torn}x`, restart])).problem).toMatchObject({ line: 3, reason: 'not valid JSON' });
  });
});
