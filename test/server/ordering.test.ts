import { describe, expect, it } from 'vitest';
import { fakeKms } from '../helpers/fake-adapter.js';
import { b64, okPayload, rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

async function gateway(overrides: Parameters<typeof startTestGateway>[1] = {}) {
  const gw = await startTestGateway(await tmp(), overrides);
  running.push(gw);
  return gw;
}

/** Sends `lines` in one write, so the gateway reads them as one pipeline, and returns the replies. */
async function pipeline(path: string, lines: string[]): Promise<string[]> {
  const c = await rawConnect(path);
  c.write(`${lines.join('\n')}\n`);
  const replies = await c.lines(lines.length);
  c.close();
  return replies;
}

describe('requests on one connection take effect in the order sent', () => {
  it('CREATE then INFO of the same id: INFO sees the key', async () => {
    const gw = await gateway({ keys: { autoCreate: false } });
    const [created, info] = await pipeline(gw.socketPath as string, ['CREATE a/b', 'INFO a/b']);
    expect(created).toBe('OK 1');
    expect(JSON.parse(okPayload(info as string))).toMatchObject({ id: 'a/b', primary: 1 });
  });

  it('DESTROY k@1 then GET k@1: the destroyed DEK is not returned', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE env/b');
    await c.ask('ROTATE env/b');
    expect(await c.ask('GET env/b@1')).toMatch(/^OK /); // cached, so a GET could be answered at once
    c.close();
    const replies = await pipeline(gw.socketPath as string, ['DESTROY env/b@1', 'GET env/b@1']);
    expect(replies).toEqual(['OK 1', 'ERR NOT_FOUND key version was destroyed']);
  });

  it('ROTATE then ENC: ENC uses the new version', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE col/x');
    expect(await c.ask(`ENC col/x ${b64('warm')}`)).toMatch(/^OK /); // version 1 cached
    c.close();
    const [rotated, sealed, again] = await pipeline(gw.socketPath as string, ['ROTATE col/x', `ENC col/x ${b64('after')}`, 'GET col/x']);
    expect(rotated).toBe('OK 2');
    expect(Buffer.from(okPayload(sealed as string), 'base64').readUInt32BE(1)).toBe(2);
    expect(again).toMatch(/^OK /);
  });

  it('LIST sees keys created before it and not those created after it', async () => {
    const gw = await gateway({ keys: { autoCreate: false } });
    const replies = await pipeline(gw.socketPath as string, ['CREATE l/1', 'CREATE l/2', 'LIST l/', 'CREATE l/3', 'LIST l/']);
    expect(replies.slice(0, 2)).toEqual(['OK 1', 'OK 1']);
    expect(JSON.parse(okPayload(replies[2] as string))).toEqual(['l/1', 'l/2']);
    expect(replies[3]).toBe('OK 1');
    expect(JSON.parse(okPayload(replies[4] as string))).toEqual(['l/1', 'l/2', 'l/3']);
  });

  it('a change waits for earlier reads of its key: GET of a cold key before DESTROY still gets the DEK', async () => {
    const gw = await gateway();
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE cold/k fake://a');
    await c.ask('ROTATE cold/k');
    const dek = okPayload(await c.ask('GET cold/k@1'));
    c.close();
    gw.cache.clear();
    const replies = await pipeline(gw.socketPath as string, ['GET cold/k@1', 'DESTROY cold/k@1', 'GET cold/k@1']);
    expect(replies).toEqual([`OK ${dek}`, 'OK 1', 'ERR NOT_FOUND key version was destroyed']);
  });

  it('reads of one cold key do not wait for each other: one unwrap serves a pipelined burst, also in an outage', async () => {
    const gw = await gateway({ kms: { timeoutMs: 300 } });
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE burst/k fake://a');
    c.close();
    gw.cache.clear();
    fakeKms.calls.length = 0;
    fakeKms.mode = 'hang';
    const started = performance.now();
    const replies = await pipeline(
      gw.socketPath as string,
      Array.from({ length: 32 }, () => 'GET burst/k'),
    );
    // All fail together at one KMS deadline, not one deadline after another.
    expect(performance.now() - started).toBeLessThan(300 * 4);
    expect(new Set(replies)).toEqual(new Set(['ERR KMS_UNAVAILABLE KMS did not answer within 300 ms']));
    expect(fakeKms.calls.filter((x) => x.op === 'unwrap')).toHaveLength(1);
  });

  it('requests for other keys are not held up by a slow one', async () => {
    const gw = await gateway({ kms: { timeoutMs: 1500 } });
    const c = await rawConnect(gw.socketPath as string);
    await c.ask('CREATE slow/k fake://a');
    gw.cache.clear();
    fakeKms.mode = 'hang';
    c.write('GET slow/k\nCREATE other/k\n');
    // Replies go out in request order, so look from a second connection: other/k exists
    // while GET slow/k is still waiting for the KMS.
    const watcher = await rawConnect(gw.socketPath as string);
    const asked = performance.now();
    let info = await watcher.ask('INFO other/k');
    while (!info.startsWith('OK ') && performance.now() - asked < 1000) info = await watcher.ask('INFO other/k');
    expect(info).toMatch(/^OK /);
    expect(performance.now() - asked).toBeLessThan(1000); // well before the slow GET's 1500 ms deadline
    const [slow, created] = await c.lines(2);
    expect(slow).toMatch(/^ERR KMS_UNAVAILABLE /);
    expect(created).toBe('OK 1');
    watcher.close();
    c.close();
  });
});
