import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EncryptionBudget } from '../../src/crypto/budget.js';
import { rawConnect, startTestGateway } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();

/** A budget over one shared counter, as the stored record holds it (several gateways may share `stored`). */
function budget(limit: number, block: number, stored = { counter: 0 }) {
  const reservations: number[] = [];
  const warnings: number[] = [];
  const others = new Map<number, { counter: number }>();
  const b = new EncryptionBudget({
    limit,
    block,
    reserve: async (_k, v, size) => {
      let c = v === 1 ? stored : others.get(v);
      if (c === undefined) others.set(v, (c = { counter: 0 }));
      if (c.counter >= limit) return undefined;
      const from = c.counter;
      c.counter = Math.min(limit, from + size);
      reservations.push(c.counter);
      return { from, to: c.counter };
    },
    warn: (_k, _v, _used, fraction) => warnings.push(fraction),
  });
  return { b, reservations, warnings, stored };
}

async function takeN(b: EncryptionBudget, n: number) {
  for (let i = 0; i < n; i++) await b.take('k', 1);
}

describe('EncryptionBudget', () => {
  it('claims a block before using it, the next one half a block ahead: one store write per block', async () => {
    const { b, reservations } = budget(1000, 100);
    await takeN(b, 250);
    // 100, 200, 300 as each block ran low, and 400 already claimed (300 - 250 <= 50).
    expect(reservations).toEqual([100, 200, 300, 400]);
    expect(b.used('k', 1)).toBe(250);
    // Inside a block a take is synchronous.
    expect(b.take('k', 1)).toBeUndefined();
  });

  it('refuses past the limit with an error that says ROTATE', async () => {
    const { b, reservations } = budget(10, 4);
    await takeN(b, 10);
    expect(reservations).toEqual([4, 8, 10]);
    await expect(async () => b.take('k', 1)).rejects.toThrow(/encryption limit \(10\); ROTATE the key/);
    // Once the counter is known to be at the limit, the refusal is synchronous.
    let refusal: unknown;
    try {
      void b.take('k', 1);
    } catch (err) {
      refusal = err;
    }
    expect(refusal).toMatchObject({ code: 'FORBIDDEN' });
    // Another version has its own budget.
    const other = b.take('k', 2);
    expect(other).toBeInstanceOf(Promise);
    await other;
  });

  it('after a restart resumes past the stored counter: never under-counts', async () => {
    const { b, reservations } = budget(1000, 100, { counter: 300 });
    await b.take('k', 1);
    expect(b.used('k', 1)).toBe(301);
    expect(reservations).toEqual([400]);
  });

  it('keeps one global bound across gateways sharing a counter: blocks never overlap', async () => {
    const shared = { counter: 0 };
    const gateways = [budget(100, 8, shared), budget(100, 8, shared), budget(100, 8, shared)];
    let made = 0;
    let refused = 0;
    // Interleaved ENCs on three gateways until every one is refused.
    for (let round = 0; round < 60; round++) {
      for (const { b } of gateways) {
        try {
          await b.take('k', 1);
          made++;
        } catch {
          refused++;
        }
      }
    }
    expect(shared.counter).toBe(100);
    expect(made).toBeLessThanOrEqual(100);
    // Each gateway forfeits at most the block it holds when the others use up the counter.
    expect(made).toBeGreaterThanOrEqual(100 - 3 * 8);
    expect(refused).toBe(180 - made);
  });

  it('uses a block granted with a new version before claiming one', async () => {
    const { b, reservations } = budget(1000, 10, { counter: 10 });
    b.grant('k', 1, { from: 0, to: 10 });
    for (let i = 0; i < 4; i++) expect(b.take('k', 1)).toBeUndefined();
    expect(reservations).toEqual([]);
    await takeN(b, 6);
    expect(reservations).toEqual([20]);
  });

  it('warns once at 50 %, 75 % and 90 % of the limit', async () => {
    const { b, warnings } = budget(100, 10);
    await takeN(b, 49);
    expect(warnings).toEqual([]);
    await takeN(b, 1);
    expect(warnings).toEqual([0.5]);
    await takeN(b, 40);
    expect(warnings).toEqual([0.5, 0.75, 0.9]);
    await takeN(b, 10);
    expect(warnings).toEqual([0.5, 0.75, 0.9]);
  });

  it('concurrent takes at a block boundary share one claim', async () => {
    const { b, reservations } = budget(1000, 10);
    await Promise.all(Array.from({ length: 25 }, () => b.take('k', 1)));
    // Three blocks for 25, and the fourth claimed ahead (30 - 25 <= 5).
    expect(reservations).toEqual([10, 20, 30, 40]);
    expect(b.used('k', 1)).toBe(25);
  });
});

describe('encryption budget through the gateway', () => {
  it('refuses ENC past keys.maxEncryptionsPerVersion until ROTATE, and remembers the count across a restart', async () => {
    const dir = await tmp();
    const gw = await startTestGateway(dir, { keys: { autoCreate: true, maxEncryptionsPerVersion: 4 } });
    const c = await rawConnect(gw.socketPath as string);
    const enc = () => c.ask('ENC k/budget aGk=');
    for (let i = 0; i < 4; i++) expect(await enc()).toMatch(/^OK /);
    expect(await enc()).toBe('ERR FORBIDDEN key version 1 has reached its encryption limit (4); ROTATE the key to get a fresh DEK');
    expect(gw.logLines.join('')).toContain('of its encryption budget: ROTATE the key soon');
    // DEC and GET are not limited.
    expect(await c.ask('GET k/budget')).toMatch(/^OK /);
    const info = JSON.parse((await c.ask('INFO k/budget')).slice(3));
    expect(info.versions[0].encryptionsReserved).toBe(4);
    expect(await c.ask('ROTATE k/budget')).toBe('OK 2');
    expect(await enc()).toMatch(/^OK /);
    c.close();
    await gw.close();
    // What the store holds for version 2: the 1 used plus what was reserved ahead of use.
    const stored = JSON.parse(await readFile(join(dir, 'data', 'keys', 'k%2Fbudget.json'), 'utf8'));
    const reservedV2 = stored.versions[1].encryptions as number;
    expect(reservedV2).toBeGreaterThanOrEqual(1);
    expect(reservedV2).toBeLessThanOrEqual(4);

    const gw2 = await startTestGateway(dir, { keys: { autoCreate: true, maxEncryptionsPerVersion: 4 } });
    const c2 = await rawConnect(gw2.socketPath as string);
    expect(await c2.ask('ENC k/budget@1 aGk=')).toMatch(/^ERR FORBIDDEN .*ROTATE/);
    // After a restart counting resumes from the reservation: never fewer than were made.
    for (let i = reservedV2; i < 4; i++) expect(await c2.ask('ENC k/budget aGk=')).toMatch(/^OK /);
    expect(await c2.ask('ENC k/budget aGk=')).toMatch(/^ERR FORBIDDEN key version 2 /);
    c2.close();
    await gw2.close();
  });
});
