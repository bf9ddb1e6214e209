import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EncryptionBudget } from '../../src/crypto/budget.js';
import { rawConnect, startTestGateway } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();

function budget(limit: number, block: number, stored = 0) {
  const reservations: number[] = [];
  const warnings: number[] = [];
  const reserved = new Map<number, number>([[1, stored]]);
  const b = new EncryptionBudget({
    limit,
    block,
    reserved: (_k, v) => reserved.get(v) ?? 0,
    reserve: async (_k, v, upTo) => {
      reservations.push(upTo);
      reserved.set(v, upTo);
    },
    warn: (_k, _v, _used, fraction) => warnings.push(fraction),
  });
  return { b, reservations, warnings };
}

async function takeN(b: EncryptionBudget, n: number) {
  for (let i = 0; i < n; i++) await b.take('k', 1);
}

describe('EncryptionBudget', () => {
  it('reserves a block before using it, the next one half a block ahead: one store write per block', async () => {
    const { b, reservations } = budget(1000, 100);
    await takeN(b, 250);
    // 100, 200, 300 as each block ran low, and 400 already asked for (300 - 250 <= 50).
    expect(reservations).toEqual([100, 200, 300, 400]);
    expect(b.used('k', 1)).toBe(250);
    // Inside a reservation a take is synchronous.
    expect(b.take('k', 1)).toBeUndefined();
  });

  it('refuses past the limit with an error that says ROTATE', async () => {
    const { b, reservations } = budget(10, 4);
    await takeN(b, 10);
    expect(reservations).toEqual([4, 8, 10]);
    expect(() => b.take('k', 1)).toThrow(/encryption limit \(10\); ROTATE the key/);
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

  it('after a restart resumes from the stored reservation: never under-counts', async () => {
    const { b, reservations } = budget(1000, 100, 300);
    await b.take('k', 1);
    expect(b.used('k', 1)).toBe(301);
    expect(reservations).toEqual([400]);
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

  it('concurrent takes at a block boundary share one reservation', async () => {
    const { b, reservations } = budget(1000, 10);
    await Promise.all(Array.from({ length: 25 }, () => b.take('k', 1)));
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
