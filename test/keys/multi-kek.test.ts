import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fileNameFor } from '../../src/keystore/file/index.js';
import type { KeyRecord } from '../../src/keystore/types.js';
import type { KeyInfo } from '../../src/keys/versions.js';
import { fakeKms } from '../helpers/fake-adapter.js';
import { b64, okPayload, rawConnect, startTestGateway, useRunningGateways, type TestGateway } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();
const [A, B] = ['fake://region-a', 'fake://region-b'];

async function gateway(overrides: Parameters<typeof startTestGateway>[1] = {}, dir?: string): Promise<TestGateway> {
  const gw = await startTestGateway(dir ?? (await tmp()), overrides);
  running.push(gw);
  return gw;
}

async function stored(gw: TestGateway, id: string): Promise<KeyRecord> {
  return JSON.parse(await readFile(join(gw.dir, 'data', 'keys', fileNameFor(id)), 'utf8')) as KeyRecord;
}

const infoOf = async (c: Awaited<ReturnType<typeof rawConnect>>, id: string) => JSON.parse(okPayload(await c.ask(`INFO ${id}`))) as KeyInfo;

describe('a DEK wrapped under several KEKs', () => {
  it('CREATE with a KEK list stores one wrap per KEK of the same DEK; INFO lists them and which answered last', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    expect(await c.ask(`CREATE k ${A},${B}`)).toBe('OK 1');
    const record = await stored(gw, 'k');
    expect(record.format).toBe(2);
    expect(record.versions[0]?.wraps.map((w) => w.kek)).toEqual([A, B]);
    expect(record.versions[0]?.pending).toBeUndefined();
    const dek = okPayload(await c.ask('GET k'));
    // Each copy alone gives the same DEK.
    for (const down of [A, B]) {
      gw.cache.clear();
      fakeKms.byKek.set(down, 'down');
      expect(okPayload(await c.ask('GET k'))).toBe(dek);
      fakeKms.byKek.clear();
    }
    const info = await infoOf(c, 'k');
    expect(info.versions[0]?.keks).toEqual([
      { kek: A, kekVersion: `${A}/v1`, lastUnwrap: { result: 'ok', at: expect.any(String) }, kekState: 'ok' },
      { kek: B, kekVersion: `${B}/v1`, lastUnwrap: { result: 'ok', at: expect.any(String) }, kekState: 'ok' },
    ]);
    fakeKms.byKek.set(A, 'down');
    gw.cache.clear();
    await c.ask('GET k');
    expect((await infoOf(c, 'k')).versions[0]?.keks.map((k) => [k.kek, k.lastUnwrap?.result, k.kekState])).toEqual([
      [A, 'KMS_UNAVAILABLE', 'unavailable'],
      [B, 'ok', 'ok'],
    ]);
    c.close();
  });

  it('ROTATE keeps the KEK list; both down is KMS_UNAVAILABLE and the connection goes on', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE k ${A},${B}`);
    expect(await c.ask('ROTATE k')).toBe('OK 2');
    expect((await stored(gw, 'k')).versions[1]?.wraps.map((w) => w.kek)).toEqual([A, B]);
    gw.cache.clear();
    fakeKms.mode = 'down';
    expect(await c.ask('GET k')).toBe(
      'ERR KMS_UNAVAILABLE none of the 2 KEKs of this key version could unwrap it (KMS_UNAVAILABLE, KMS_UNAVAILABLE)',
    );
    fakeKms.mode = 'ok';
    expect(await c.ask('GET k')).toMatch(/^OK /);
    c.close();
  });

  it('a new version is stored only when every KEK wrapped it, unless keys.minWraps allows fewer: then the missing wrap is pending and made later', async () => {
    const strict = await gateway();
    const c = await rawConnect(strict.socketPath as string);
    fakeKms.byKek.set(B, 'down');
    expect(await c.ask(`CREATE k ${A},${B}`)).toMatch(/^ERR KMS_UNAVAILABLE only 1 of 2 KEKs wrapped the new DEK \(2 needed\)/);
    expect(await c.ask('INFO k')).toMatch(/^ERR NOT_FOUND /);
    c.close();

    const lenient = await gateway({ keys: { autoCreate: false, minWraps: 1 } });
    const l = await rawConnect(lenient.socketPath as string);
    expect(await l.ask(`CREATE k ${A},${B}`)).toBe('OK 1');
    const dek = okPayload(await l.ask('GET k'));
    expect((await stored(lenient, 'k')).versions[0]).toMatchObject({ wraps: [{ kek: A }], pending: [B] });
    expect((await infoOf(l, 'k')).versions[0]?.keks.map((k) => [k.kek, k.pending ?? false])).toEqual([
      [A, false],
      [B, true],
    ]);
    expect(await lenient.keys.completePending()).toBe(0); // B still down: stays pending
    fakeKms.byKek.clear();
    expect(await lenient.keys.completePending()).toBe(1);
    const v1 = (await stored(lenient, 'k')).versions[0];
    expect(v1?.wraps.map((w) => w.kek)).toEqual([A, B]);
    expect(v1?.pending).toBeUndefined();
    fakeKms.byKek.set(A, 'down');
    lenient.cache.clear();
    expect(okPayload(await l.ask('GET k'))).toBe(dek);
    l.close();
  });

  it('kms.revocation any (default): a denial of one KEK stops the version until that KEK unwraps again or is removed', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE k ${A},${B}`);
    const env = okPayload(await c.ask(`ENC k ${b64('row')}`));
    expect(gw.cache.peek('k', 1)).toBeDefined();
    // The canary (or any call) sees the denial: the cached DEK is zeroized at once.
    fakeKms.byKek.set(A, 'deny');
    await gw.canary.runOnce();
    expect(gw.cache.peek('k', 1)).toBeUndefined();
    expect(await c.ask(`DEC k ${env}`)).toMatch(/^ERR KMS_DENIED /);
    // An outage of the denied KEK does not lift the denial, and B is still not asked.
    fakeKms.byKek.set(A, 'down');
    const before = fakeKms.calls.filter((x) => x.kek === B && x.op === 'unwrap').length;
    expect(await c.ask(`DEC k ${env}`)).toMatch(/^ERR KMS_UNAVAILABLE /);
    expect(gw.health.denied(A)).toBe(true);
    expect(fakeKms.calls.filter((x) => x.kek === B && x.op === 'unwrap').length).toBe(before);
    // The operator removes the revoked KEK: served by B.
    fakeKms.byKek.set(A, 'deny');
    expect(await c.ask(`REMOVEKEK k ${A}`)).toBe('OK 1');
    expect(await c.ask(`DEC k ${env}`)).toBe(`OK ${b64('row')}`);
    expect(await c.ask(`REMOVEKEK k ${B}`)).toBe('ERR BAD_REQUEST version 1 would be left without a KEK; ADDKEK another first');
    c.close();
  });

  it('kms.revocation any: the denied KEK answering again lifts the stop', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE k ${A},${B}`);
    gw.cache.clear();
    fakeKms.byKek.set(A, 'deny');
    expect(await c.ask('GET k')).toMatch(/^ERR KMS_DENIED /);
    fakeKms.byKek.clear();
    expect(await c.ask('GET k')).toMatch(/^OK /);
    expect(gw.health.denied(A)).toBe(false);
    c.close();
  });

  it('kms.revocation all: served while any KEK unwraps; the cached DEK stays until every KEK is denied', async () => {
    const gw = await gateway({ kms: { revocation: 'all' } });
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE k ${A},${B}`);
    const dek = okPayload(await c.ask('GET k'));
    fakeKms.byKek.set(A, 'deny');
    await gw.canary.runOnce();
    expect(gw.cache.peek('k', 1)).toBeDefined();
    gw.cache.clear();
    expect(okPayload(await c.ask('GET k'))).toBe(dek);
    fakeKms.byKek.set(B, 'deny');
    await gw.canary.runOnce();
    expect(gw.cache.peek('k', 1)).toBeUndefined();
    expect(await c.ask('GET k')).toMatch(/^ERR KMS_DENIED /);
    c.close();
  });

  it('ADDKEK wraps existing versions under a new KEK inside the gateway; old envelopes decrypt with only the new KEK left', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE k ${A}`);
    const e1 = okPayload(await c.ask(`ENC k ${b64('one')}`));
    await c.ask('ROTATE k');
    const e2 = okPayload(await c.ask(`ENC k ${b64('two')}`));
    expect(await c.ask(`ADDKEK k ${B}`)).toBe('OK 1'); // the newest version only
    expect((await stored(gw, 'k')).versions.map((v) => v.wraps.length)).toEqual([1, 2]);
    expect(await c.ask(`ADDKEK k ${B} ALL`)).toBe('OK 1');
    expect(await c.ask(`ADDKEK k ${B} ALL`)).toBe('OK 0');
    expect(await c.ask(`REMOVEKEK k ${A} ALL`)).toBe('OK 2');
    fakeKms.byKek.set(A, 'deny'); // the old KEK is gone for good
    gw.cache.clear();
    expect(await c.ask(`DEC k ${e1}`)).toBe(`OK ${b64('one')}`);
    expect(await c.ask(`DEC k ${e2}`)).toBe(`OK ${b64('two')}`);
    expect(await c.ask('ROTATE k')).toBe('OK 3');
    expect((await stored(gw, 'k')).versions[2]?.wraps.map((w) => w.kek)).toEqual([B]);
    expect(await c.ask(`ADDKEK k@1 ${A} ALL`)).toBe('ERR BAD_REQUEST ADDKEK takes @version or ALL, not both');
    c.close();
  });

  it('REWRAP to a KEK list sets every version to exactly that list', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE k ${A}`);
    await c.ask('ROTATE k');
    expect(await c.ask(`REWRAP k ${B},local://local-kek`)).toBe('OK 2');
    expect((await stored(gw, 'k')).versions.map((v) => v.wraps.map((w) => w.kek))).toEqual([
      [B, 'local://local-kek'],
      [B, 'local://local-kek'],
    ]);
    c.close();
  });

  it('a format-1 record (kmsgw 0.1) is served as it is and written as format 2 on its next change', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask(`CREATE k ${A}`);
    const dek = okPayload(await c.ask('GET k'));
    await gw.close();
    running.pop();
    const path = join(gw.dir, 'data', 'keys', fileNameFor('k'));
    const r = JSON.parse(await readFile(path, 'utf8')) as KeyRecord;
    const v1 = {
      ...r,
      format: 1,
      versions: r.versions.map(({ wraps, ...v }) => ({
        ...v,
        kek: wraps[0]?.kek,
        kekVersion: wraps[0]?.kekVersion,
        wrapped: wraps[0]?.wrapped,
      })),
    };
    const { writeFile } = await import('node:fs/promises');
    await writeFile(path, JSON.stringify(v1));
    const again = await gateway({}, gw.dir);
    const c2 = await rawConnect(again.socketPath as string);
    expect(okPayload(await c2.ask('GET k'))).toBe(dek);
    expect(JSON.parse(await readFile(path, 'utf8')).format).toBe(1);
    expect(await c2.ask('ROTATE k')).toBe('OK 2');
    const upgraded = JSON.parse(await readFile(path, 'utf8')) as KeyRecord;
    expect(upgraded.format).toBe(2);
    expect(upgraded.versions.map((v) => v.wraps.map((w) => w.kek))).toEqual([[A], [A]]);
    c.close();
    c2.close();
  });
});
