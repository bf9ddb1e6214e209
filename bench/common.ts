import type { ColdResult } from './cold.js';
/** Shared between the benchmark parent and its children. */

export const BENCH_KEY = 'bench/key';

/** The bare server's fixed reply: 44 characters + LF = 45 bytes. */
export const BARE_REPLY = Buffer.from(`OK ${'A'.repeat(40)}=\n`, 'latin1');
if (BARE_REPLY.length !== 45) throw new Error('bare reply must be 45 bytes');

/** One in-process ENC measurement: ops/s of each variant, per round. */
export interface EncSizeResult {
  readonly size: number;
  readonly label: string;
  /** Node's own AES-256-GCM calls (createCipheriv + setAAD + update + final + getAuthTag). */
  readonly nodeOps: number[];
  /** The same Node calls with nonces taken from a pre-filled random pool (no getrandom per call). */
  readonly nodePooledOps: number[];
  /** session.handle(`ENC bench/key <b64>`) + formatReply: parse + base64 decode + seal + base64 encode. */
  readonly lineOps: number[];
  /** seal() alone (envelope build + the same cipher calls). */
  readonly sealOps: number[];
}

export interface EncResult {
  readonly durationMs: number;
  readonly sizes: EncSizeResult[];
}

/** In-process cached GET with metrics on and off: ops/s per round. */
export interface MetricsAbInProcess {
  readonly onOps: number[];
  readonly offOps: number[];
}

export type ChildMessage =
  | { readonly type: 'ready'; readonly socketPath: string }
  | { readonly type: 'enc-result'; readonly result: EncResult }
  | { readonly type: 'get-ab-result'; readonly result: MetricsAbInProcess }
  | { readonly type: 'cold-result'; readonly result: ColdResult }
  | { readonly type: 'cpu'; readonly us: number }
  | { readonly type: 'error'; readonly message: string };

/** `cpu`: reply with the child's user + system CPU time so far, in µs. */
export type ParentMessage = { readonly type: 'stop' } | { readonly type: 'cpu' };

/** Median of a non-empty list. */
export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}
export const min = (v: readonly number[]): number => Math.min(...v);
export const max = (v: readonly number[]): number => Math.max(...v);
