import { describe, expect, it } from 'vitest';
import { combine, raceUnwrap, type Schedule } from '../../src/keys/failover.js';
import { preferenceOrder } from '../../src/keys/kek-order.js';
import { GatewayError } from '../../src/protocol/errors.js';

/** A hedge timer the test fires by hand: no test waits on a clock. */
function manualSchedule() {
  const armed: Array<{ ms: number; fn: () => void; live: boolean }> = [];
  const schedule: Schedule = (ms, fn) => {
    const t = { ms, fn, live: true };
    armed.push(t);
    return () => (t.live = false);
  };
  const fire = () => {
    const live = armed.filter((t) => t.live);
    for (const t of live) {
      t.live = false;
      t.fn();
    }
    return live.length;
  };
  return { schedule, fire, armed };
}

/** A KEK call the test settles by hand. */
function deferred() {
  let resolve!: (b: Buffer) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<Buffer>((ok, fail) => ((resolve = ok), (reject = fail)));
  return { promise, resolve, reject };
}

function harness(keks: string[]) {
  const calls = new Map<string, { d: ReturnType<typeof deferred>; signal: AbortSignal }>();
  const unwrap = (kek: string, signal: AbortSignal) => {
    const d = deferred();
    calls.set(kek, { d, signal });
    return d.promise;
  };
  const timers = manualSchedule();
  return { calls, unwrap, timers, keks };
}

const tick = () => new Promise<void>((r) => setImmediate(r));
const dek = (b: number) => Buffer.alloc(32, b);

describe('raceUnwrap: failover and hedging across the KEKs of one version', () => {
  it('asks the preferred KEK alone; its answer wins with no other call', async () => {
    const h = harness(['a', 'b']);
    const won = raceUnwrap(h.keks, h.unwrap, { hedgeMs: 250 }, {}, h.timers.schedule);
    expect([...h.calls.keys()]).toEqual(['a']);
    expect(h.timers.armed.map((t) => t.ms)).toEqual([250]);
    h.calls.get('a')?.d.resolve(dek(1));
    expect(await won).toEqual({ dek: dek(1), kek: 'a' });
    expect(h.timers.armed[0]?.live).toBe(false);
    expect([...h.calls.keys()]).toEqual(['a']);
  });

  it('hands over at once when a KEK fails with KMS_UNAVAILABLE', async () => {
    const h = harness(['a', 'b']);
    const won = raceUnwrap(h.keks, h.unwrap, { hedgeMs: 250 }, {}, h.timers.schedule);
    h.calls.get('a')?.d.reject(new GatewayError('KMS_UNAVAILABLE', 'down'));
    await tick();
    expect([...h.calls.keys()]).toEqual(['a', 'b']);
    h.calls.get('b')?.d.resolve(dek(2));
    expect((await won).kek).toBe('b');
  });

  it('after hedgeMs without an answer asks the next as well; the first answer wins, the loser is cancelled and its late DEK zeroized', async () => {
    const h = harness(['a', 'b', 'c']);
    const won = raceUnwrap(h.keks, h.unwrap, { hedgeMs: 250 }, {}, h.timers.schedule);
    expect(h.timers.fire()).toBe(1);
    expect([...h.calls.keys()]).toEqual(['a', 'b']);
    h.calls.get('b')?.d.resolve(dek(2));
    expect((await won).kek).toBe('b');
    expect(h.calls.get('a')?.signal.aborted).toBe(true);
    expect(h.timers.fire()).toBe(0); // no third KEK is asked after a win
    const late = dek(1);
    h.calls.get('a')?.d.resolve(late);
    await tick();
    expect(late.every((x) => x === 0)).toBe(true);
  });

  it('stops at once on a code the rules say ends the race (revocation any: KMS_DENIED)', async () => {
    const h = harness(['a', 'b']);
    const won = raceUnwrap(h.keks, h.unwrap, { hedgeMs: 250 }, { stopOn: (c) => c === 'KMS_DENIED' }, h.timers.schedule);
    h.calls.get('a')?.d.reject(new GatewayError('KMS_DENIED', 'disabled'));
    await expect(won).rejects.toMatchObject({ code: 'KMS_DENIED' });
    expect([...h.calls.keys()]).toEqual(['a']);
  });

  it('when every KEK fails, answers KMS_UNAVAILABLE if any outage was among the causes, so the caller may retry', async () => {
    const h = harness(['a', 'b']);
    const won = raceUnwrap(h.keks, h.unwrap, { hedgeMs: 250 }, {}, h.timers.schedule);
    h.calls.get('a')?.d.reject(new GatewayError('KMS_DENIED', 'disabled'));
    await tick();
    h.calls.get('b')?.d.reject(new GatewayError('KMS_UNAVAILABLE', 'down'));
    await expect(won).rejects.toMatchObject({ code: 'KMS_UNAVAILABLE' });
  });

  it('one KEK: its own error, unchanged', async () => {
    const h = harness(['a']);
    const won = raceUnwrap(h.keks, h.unwrap, { hedgeMs: 250 }, {}, h.timers.schedule);
    expect(h.timers.armed).toHaveLength(0);
    const err = new GatewayError('DECRYPT_FAILED', 'bad blob');
    h.calls.get('a')?.d.reject(err);
    await expect(won).rejects.toBe(err);
  });
});

describe('combine', () => {
  const e = (code: ConstructorParameters<typeof GatewayError>[0]) => new GatewayError(code, code);
  it('prefers an outage, then a denial, then the first error', () => {
    expect(combine([e('KMS_DENIED'), e('THROTTLED')]).code).toBe('THROTTLED');
    expect(combine([e('THROTTLED'), e('KMS_UNAVAILABLE')]).code).toBe('KMS_UNAVAILABLE');
    expect(combine([e('DECRYPT_FAILED'), e('KMS_DENIED')]).code).toBe('KMS_DENIED');
    expect(combine([e('DECRYPT_FAILED'), e('INTERNAL')]).code).toBe('DECRYPT_FAILED');
    expect(combine([e('KMS_DENIED'), e('KMS_DENIED')]).message).toBe(
      'none of the 2 KEKs of this key version could unwrap it (KMS_DENIED, KMS_DENIED)',
    );
  });
});

describe('preferenceOrder (kms.preference)', () => {
  it('puts KEKs matching earlier globs first and keeps the stored order otherwise', () => {
    const order = preferenceOrder(['aws-kms://arn:aws:kms:eu-west-1:*', 'gcp-kms://*']);
    expect(
      order(['azure-kv://v/k', 'gcp-kms://g', 'aws-kms://arn:aws:kms:us-east-1:1:key/a', 'aws-kms://arn:aws:kms:eu-west-1:1:key/b']),
    ).toEqual(['aws-kms://arn:aws:kms:eu-west-1:1:key/b', 'gcp-kms://g', 'azure-kv://v/k', 'aws-kms://arn:aws:kms:us-east-1:1:key/a']);
    expect(preferenceOrder([])(['b', 'a'])).toEqual(['b', 'a']);
  });
});
