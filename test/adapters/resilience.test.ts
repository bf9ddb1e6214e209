import { describe, expect, it } from 'vitest';
import { GuardedWrapper, type GuardOptions, type KmsCall } from '../../adapters/guard.js';
import { KekHealth } from '../../adapters/health.js';
import type { KeyWrapper, WrapContext, WrappedKey } from '../../adapters/types.js';
import { KmsError, type ErrorCode } from '../../src/protocol/errors.js';

/** A KEK whose next answers are scripted: an error code (with an optional Retry-After) or success. */
class ScriptedKek implements KeyWrapper {
  readonly kek = 'fake://scripted';
  calls = 0;
  script: Array<ErrorCode | { code: ErrorCode; retryAfterMs: number } | 'ok'> = [];
  /** Resolves the call in flight when set (for "one probe at a time"). */
  gate: Promise<void> | undefined;

  private async next(): Promise<void> {
    this.calls++;
    if (this.gate) await this.gate;
    const step = this.script.shift() ?? 'ok';
    if (step === 'ok') return;
    const { code, retryAfterMs } = typeof step === 'string' ? { code: step, retryAfterMs: undefined } : step;
    throw new KmsError(code, `scripted ${code}`, retryAfterMs === undefined ? {} : { retryAfterMs });
  }

  async wrap(dek: Buffer, _ctx: WrapContext): Promise<WrappedKey> {
    await this.next();
    return { blob: Buffer.from(dek) };
  }

  async unwrap(wrapped: WrappedKey, _ctx: WrapContext): Promise<Buffer> {
    await this.next();
    return Buffer.from(wrapped.blob);
  }

  async close(): Promise<void> {}
}

const ctx = { keyId: 'k', version: 1 };
const blob = { blob: Buffer.alloc(32, 7) };

function setup(extra: Partial<GuardOptions> = {}) {
  const kek = new ScriptedKek();
  let t = 1_000_000;
  const waits: number[] = [];
  const seen: KmsCall[] = [];
  const health = new KekHealth(() => t);
  const guard = new GuardedWrapper(kek, {
    timeoutMs: 2000,
    retry: { attempts: 3, baseDelayMs: 100, maxDelayMs: 1000 },
    breaker: { failures: 3, openMs: 10_000 },
    health,
    observe: (call) => seen.push(call),
    now: () => t,
    // Waiting moves the injected clock instead of sleeping.
    sleep: async (ms) => {
      waits.push(ms);
      t += ms;
    },
    random: () => 0.5,
    ...extra,
  });
  return { kek, guard, health, waits, seen, advance: (ms: number) => (t += ms) };
}

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'ok',
    (err: KmsError) => err.code,
  );

describe('retries inside the deadline', () => {
  it('retries KMS_UNAVAILABLE and THROTTLED with jittered exponential backoff, then succeeds', async () => {
    const { kek, guard, waits, seen, health } = setup();
    kek.script = ['KMS_UNAVAILABLE', 'THROTTLED', 'ok'];
    expect((await guard.unwrap(blob, ctx)).equals(blob.blob)).toBe(true);
    expect(kek.calls).toBe(3);
    expect(waits).toEqual([50, 100]); // half of 100, then half of 200 (random = 0.5)
    expect(seen.map((c) => c.outcome)).toEqual(['unavailable', 'throttled', 'ok']);
    expect(health.status(kek.kek).state).toBe('ok');
  });

  it('gives up after kms.retry.attempts and reports the last error', async () => {
    const { kek, guard, health } = setup();
    kek.script = ['KMS_UNAVAILABLE', 'KMS_UNAVAILABLE', 'KMS_UNAVAILABLE', 'ok'];
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('KMS_UNAVAILABLE');
    expect(kek.calls).toBe(3);
    expect(health.status(kek.kek)).toMatchObject({ state: 'unavailable', code: 'KMS_UNAVAILABLE' });
  });

  it.each(['KMS_DENIED', 'DECRYPT_FAILED', 'INTERNAL'] as const)('never retries %s', async (code) => {
    const { kek, guard } = setup();
    kek.script = [code, 'ok'];
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe(code);
    expect(kek.calls).toBe(1);
  });

  it('waits as long as a Retry-After hint asks when it fits the deadline', async () => {
    const { kek, guard, waits } = setup();
    kek.script = [{ code: 'THROTTLED', retryAfterMs: 700 }, 'ok'];
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('ok');
    expect(waits).toEqual([700]);
  });

  it('fails at once with THROTTLED when the hint does not fit the deadline, and holds calls back until it passes', async () => {
    const { kek, guard, waits, seen, advance } = setup();
    kek.script = [{ code: 'THROTTLED', retryAfterMs: 5000 }];
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('THROTTLED');
    expect(waits).toEqual([]);
    // Within the hint: refused without reaching the KMS.
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('THROTTLED');
    expect(kek.calls).toBe(1);
    expect(seen.at(-1)?.outcome).toBe('breaker_open');
    advance(5000);
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('ok');
    expect(kek.calls).toBe(2);
  });
});

describe('circuit breaker per KEK', () => {
  it('opens after kms.breaker.failures calls fail, fails fast while open, closes after one good probe', async () => {
    const { kek, guard, advance, seen } = setup({ retry: { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 } });
    kek.script = ['KMS_UNAVAILABLE', 'KMS_UNAVAILABLE', 'KMS_UNAVAILABLE'];
    for (let i = 0; i < 3; i++) expect(await codeOf(guard.unwrap(blob, ctx))).toBe('KMS_UNAVAILABLE');
    expect(kek.calls).toBe(3);
    // Open: 100 calls, none reaches the KMS.
    const refused = await Promise.all(Array.from({ length: 100 }, () => codeOf(guard.unwrap(blob, ctx))));
    expect(new Set(refused)).toEqual(new Set(['KMS_UNAVAILABLE']));
    expect(kek.calls).toBe(3);
    expect(seen.filter((c) => c.outcome === 'breaker_open')).toHaveLength(100);
    // After openMs one probe goes through; the others still fail fast while it runs.
    advance(10_000);
    let release!: () => void;
    kek.gate = new Promise((r) => (release = r));
    const probe = codeOf(guard.unwrap(blob, ctx));
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('KMS_UNAVAILABLE');
    kek.gate = undefined;
    release();
    expect(await probe).toBe('ok');
    expect(kek.calls).toBe(4);
    // Closed again: calls reach the KMS.
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('ok');
    expect(kek.calls).toBe(5);
  });

  it('a failed probe opens it again for openMs', async () => {
    const { kek, guard, advance } = setup({ retry: { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 } });
    kek.script = ['KMS_UNAVAILABLE', 'KMS_UNAVAILABLE', 'KMS_UNAVAILABLE', 'KMS_UNAVAILABLE'];
    for (let i = 0; i < 3; i++) await codeOf(guard.unwrap(blob, ctx));
    advance(10_000);
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('KMS_UNAVAILABLE'); // the probe, reaching the KMS
    expect(kek.calls).toBe(4);
    advance(9_999);
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('KMS_UNAVAILABLE');
    expect(kek.calls).toBe(4);
    advance(1);
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('ok');
  });

  it('a denial is an answer: it resets the count instead of opening the breaker', async () => {
    const { kek, guard } = setup({ retry: { attempts: 1, baseDelayMs: 0, maxDelayMs: 0 } });
    kek.script = ['KMS_UNAVAILABLE', 'KMS_UNAVAILABLE', 'KMS_DENIED', 'KMS_UNAVAILABLE', 'KMS_UNAVAILABLE', 'ok'];
    for (let i = 0; i < 5; i++) await codeOf(guard.unwrap(blob, ctx));
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('ok');
    expect(kek.calls).toBe(6);
  });
});

describe('KEK health', () => {
  it('a denial marks the KEK denied; a wrap does not lift it, an unwrap does', async () => {
    const { kek, guard, health } = setup();
    const changes: string[] = [];
    health.onChange((now) => changes.push(now.state));
    kek.script = ['KMS_DENIED'];
    expect(await codeOf(guard.unwrap(blob, ctx))).toBe('KMS_DENIED');
    expect(health.denied(kek.kek)).toBe(true);
    await guard.wrap(Buffer.alloc(32, 1), ctx);
    expect(health.denied(kek.kek)).toBe(true);
    await guard.unwrap(blob, ctx);
    expect(health.denied(kek.kek)).toBe(false);
    expect(changes).toEqual(['denied', 'ok']);
  });

  it('a bad blob (DECRYPT_FAILED) or an adapter bug (INTERNAL) says nothing about the KEK', async () => {
    const { kek, guard, health } = setup();
    await guard.unwrap(blob, ctx);
    kek.script = ['DECRYPT_FAILED', 'INTERNAL'];
    await codeOf(guard.unwrap(blob, ctx));
    await codeOf(guard.unwrap(blob, ctx));
    expect(health.status(kek.kek).state).toBe('ok');
  });
});
