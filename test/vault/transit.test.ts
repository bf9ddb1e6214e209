import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { b64, rawConnect, startTestGateway, useRunningGateways } from '../helpers/gateway.js';
import { useTmpDirs } from '../helpers/tmp.js';

const tmp = useTmpDirs();
const running = useRunningGateways();

async function frontDoor() {
  const gw = await startTestGateway(await tmp(), { vault: { listen: '127.0.0.1:0', insecure: true }, keys: { autoCreate: true } });
  running.push(gw);
  const port = gw.vault?.port as number;
  const post = async (path: string, body: unknown) => {
    const res = await fetch(`http://127.0.0.1:${port}/v1/transit/${path}`, {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { 'X-Vault-Token': 'dev' },
    });
    return {
      status: res.status,
      json: (res.status === 204 ? null : await res.json()) as { data?: Record<string, unknown>; errors?: string[] },
    };
  };
  return { gw, post, port };
}

describe('Vault Transit through the front door', () => {
  it('encrypts and decrypts with associated data; the ciphertext names the kmsgw DEK version, usable from the line protocol', async () => {
    const { gw, post } = await frontDoor();
    const enc = await post('encrypt/orders', { plaintext: b64('card 4111'), associated_data: b64('order:7') });
    expect(enc.status).toBe(200);
    expect(enc.json.data?.['ciphertext']).toMatch(/^vault:v1:[A-Za-z0-9+/]+=*$/);
    expect(enc.json.data?.['key_version']).toBe(1);
    const dec = await post('decrypt/orders', { ciphertext: enc.json.data?.['ciphertext'], associated_data: b64('order:7') });
    expect(dec).toMatchObject({ status: 200, json: { data: { plaintext: b64('card 4111') } } });
    // The same key from the line protocol: transit/orders.
    const c = await rawConnect(gw.socketPath as string);
    const envelope = (enc.json.data?.['ciphertext'] as string).split(':')[2] as string;
    expect(await c.ask(`DEC transit/orders ${envelope} ${b64('order:7')}`)).toBe(`OK ${b64('card 4111')}`);
    c.close();
    expect((await post('decrypt/orders', { ciphertext: enc.json.data?.['ciphertext'], associated_data: b64('order:8') })).status).toBe(400);
  });

  it('rotates, rewraps to the newest version, answers batches item by item, and makes data keys', async () => {
    const { post, port } = await frontDoor();
    const v1 = (await post('encrypt/k', { plaintext: b64('x') })).json.data?.['ciphertext'] as string;
    expect((await post('keys/k/rotate', {})).status).toBe(204);
    const rewrapped = await post('rewrap/k', { ciphertext: v1 });
    expect(rewrapped.json.data?.['ciphertext']).toMatch(/^vault:v2:/);
    const batch = await post('encrypt/k', { batch_input: [{ plaintext: b64('a') }, { plaintext: 'not base64!' }] });
    expect(batch.status).toBe(200);
    const results = batch.json.data?.['batch_results'] as Array<Record<string, unknown>>;
    expect(results[0]?.['ciphertext']).toMatch(/^vault:v2:/);
    expect(results[1]).toEqual({ error: 'plaintext must be non-empty base64' });
    const dk = await post('datakey/plaintext/k', {});
    expect(Buffer.from(dk.json.data?.['plaintext'] as string, 'base64')).toHaveLength(32);
    const opened = await post('decrypt/k', { ciphertext: dk.json.data?.['ciphertext'] });
    expect(opened.json.data?.['plaintext']).toBe(dk.json.data?.['plaintext']);
    expect((await post('datakey/wrapped/k', {})).json.data?.['plaintext']).toBeUndefined();
    const res = await fetch(`http://127.0.0.1:${port}/v1/transit/keys/k`, { headers: { 'X-Vault-Token': 'dev' } });
    expect(await res.json()).toMatchObject({ data: { name: 'k', type: 'aes256-gcm96', latest_version: 2, min_decryption_version: 1 } });
    // Creating a key is idempotent, as in Vault (applications create theirs at every start).
    expect((await post('keys/made', {})).status).toBe(204);
    expect((await post('keys/made', {})).status).toBe(204);
    expect((await post('encrypt/made', { plaintext: b64('x') })).json.data?.['ciphertext']).toMatch(/^vault:v1:/);
    expect((await post('encrypt/k', { plaintext: b64('x'), context: b64('c') })).json.errors).toEqual([
      'context is not supported: kmsgw has no derived keys',
    ]);
  });

  it('records every Transit request in the audit log, refusals before any key use included', async () => {
    const dir = await tmp();
    const gw = await startTestGateway(dir, {
      vault: { listen: '127.0.0.1:0', insecure: true },
      audit: { file: 'audit.log', fsync: 'always' },
    });
    const port = gw.vault?.port as number;
    const post = (path: string, body: unknown) =>
      fetch(`http://127.0.0.1:${port}/v1/transit/${path}`, { method: 'POST', body: JSON.stringify(body) }).then((r) => r.status);
    expect(await post('encrypt/a', { plaintext: b64('x') })).toBe(200);
    expect(await post('encrypt/a', { plaintext: 'not base64!' })).toBe(400);
    expect(await post('decrypt/a', { ciphertext: 'vault:v1' })).toBe(400);
    expect(await post('keys/b', { type: 'rsa-2048' })).toBe(400);
    expect(await post('nope/a', {})).toBe(404);
    await gw.close();
    const records = (await readFile(join(dir, 'audit.log'), 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(records.map((r) => [r['verb'], r['keyId'] ?? '-', r['outcome']])).toEqual([
      ['ENC', 'transit/a', 'OK'],
      ['ENC', 'transit/a', 'BAD_REQUEST'],
      ['DEC', 'transit/a', 'BAD_REQUEST'],
      ['CREATE', 'transit/b', 'BAD_REQUEST'],
      ['invalid', '-', 'NOT_FOUND'],
    ]);
  });
});
