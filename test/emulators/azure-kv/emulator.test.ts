// Tests of the Key Vault emulator itself, all through the real @azure/keyvault-keys SDK over HTTPS.
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request as httpsRequest } from 'node:https';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CryptographyClient, KeyClient } from '@azure/keyvault-keys';
import {
  caAgent,
  cryptoClient,
  emulatorRequests,
  fakeCredential,
  keyClient,
  kvErrorShape,
  startAzureKvEmulator,
  testClientOptions,
  type AzureKvEmulator,
  type AzureKvEndpoint,
} from '../../helpers/azure-kv.js';

const NO_RETRY = { retryOptions: { maxRetries: 0 } };
const KID_RE = /^https:\/\/localhost:\d+\/keys\/[0-9a-zA-Z-]+\/[0-9a-f]{32}$/;

/** Resolves to the rejection of `p` (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the call to fail');
}

/** A raw HTTPS request (trusting the emulator's cert) to see status, headers and body exactly. */
function raw(
  ep: AzureKvEndpoint,
  method: string,
  path: string,
  opts: { headers?: Record<string, string>; body?: unknown; agent?: Agent } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: unknown }> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
    const req = httpsRequest(
      `${ep.vaultUrl}${path}`,
      {
        method,
        agent: opts.agent ?? caAgent(ep.caCertPath),
        headers: { ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}), ...opts.headers },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (s: string) => (text += s));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text ? JSON.parse(text) : null }));
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

const uniq = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;

describe('Key Vault emulator (shared, via inject)', () => {
  let ep: AzureKvEndpoint;
  let kc: KeyClient;

  beforeAll(() => {
    ep = inject('azureKv');
    kc = keyClient(ep.vaultUrl, ep.caCertPath, NO_RETRY);
  });

  it('answers an unauthenticated request with the Key Vault challenge; the SDK runs the challenge flow', async () => {
    const r = await raw(ep, 'GET', '/keys/anything?api-version=7.4');
    expect(r.status).toBe(401);
    expect(r.headers['www-authenticate']).toBe(
      'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"',
    );
    expect(r.body).toEqual({ error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' } });
    // Any bearer token is accepted (tokens are not validated).
    const ok = await raw(ep, 'GET', '/keys?api-version=7.4', { headers: { authorization: 'Bearer whatever' } });
    expect(ok.status).toBe(200);
    expect((await raw(ep, 'GET', '/keys?api-version=7.4', { headers: { authorization: 'Basic x' } })).status).toBe(401);

    const calls: { scopes: string | string[]; tenantId?: string }[] = [];
    const credential = {
      getToken: async (scopes: string | string[], options?: { tenantId?: string }) => {
        calls.push({ scopes, tenantId: options?.tenantId });
        return { token: 'recorded', expiresOnTimestamp: Date.now() + 3600_000 };
      },
    };
    const client = new KeyClient(ep.vaultUrl, credential, testClientOptions(ep.caCertPath, NO_RETRY));
    const name = uniq('challenge');
    const key = await client.createKey(name, 'RSA');
    expect(key.name).toBe(name);
    expect(calls).toEqual([{ scopes: ['https://vault.azure.net/.default'], tenantId: '00000000-0000-0000-0000-000000000000' }]);
    const log = (await emulatorRequests(ep)).filter((e) => e.key === name);
    // First attempt without token and body → 401; the SDK retries with the token and the original body.
    expect(log.map((e) => [e.op, e.authorized, e.status])).toEqual([
      ['create', false, 401],
      ['create', true, 200],
    ]);
  });

  it('requires a known api-version (7.x or a dated one, as the SDK sends: 2025-07-01)', async () => {
    const auth = { authorization: 'Bearer x' };
    expect((await raw(ep, 'GET', '/keys?api-version=2025-07-01', { headers: auth })).status).toBe(200);
    expect((await raw(ep, 'GET', '/keys?api-version=7.6-preview.2', { headers: auth })).status).toBe(200);
    const none = await raw(ep, 'GET', '/keys', { headers: auth });
    expect(none.status).toBe(400);
    expect(none.body).toMatchObject({ error: { code: 'BadParameter' } });
    expect((await raw(ep, 'GET', '/keys?api-version=banana', { headers: auth })).status).toBe(400);
  });

  it('creates RSA keys with Key Vault kids, attributes and key_ops; get by name or version', async () => {
    const name = uniq('rsa');
    const key = await kc.createKey(name, 'RSA', { keySize: 3072, keyOps: ['wrapKey', 'unwrapKey'], tags: { team: 'kmsgw' } });
    expect(key.id).toMatch(KID_RE);
    expect(key.id).toBe(`${ep.vaultUrl}/keys/${name}/${key.properties.version}`);
    expect(key.keyType).toBe('RSA');
    expect(key.keyOperations).toEqual(['wrapKey', 'unwrapKey']);
    expect(key.key?.n?.length).toBe(384);
    expect(Buffer.from(key.key!.e!).toString('hex')).toBe('010001');
    expect(key.properties.enabled).toBe(true);
    expect(key.properties.tags).toEqual({ team: 'kmsgw' });
    expect(key.properties.recoveryLevel).toBe('Recoverable+Purgeable');
    expect(key.properties.createdOn!.getTime()).toBeGreaterThan(Date.now() - 60_000);

    const latest = await kc.getKey(name);
    expect(latest.id).toBe(key.id);
    const byVersion = await kc.getKey(name, { version: key.properties.version! });
    expect(byVersion.id).toBe(key.id);
    expect(Buffer.from(byVersion.key!.n!).equals(Buffer.from(key.key!.n!))).toBe(true);

    const defaults = await kc.createKey(uniq('rsa-default'), 'RSA-HSM');
    expect(defaults.keyType).toBe('RSA-HSM');
    expect(defaults.key?.n?.length).toBe(256);
    expect(defaults.keyOperations).toEqual(['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey']);
  });

  it('round-trips RSA-OAEP-256 wrap/unwrap on the server (versioned and unversioned kids)', async () => {
    const name = uniq('oaep256');
    const key = await kc.createKey(name, 'RSA');
    const dek = randomBytes(32);
    const cc = cryptoClient(key.id!, ep.caCertPath, NO_RETRY);
    const wrapped = await cc.wrapKey('RSA-OAEP-256', dek);
    expect(wrapped.keyID).toBe(key.id);
    expect(wrapped.result.length).toBe(256);
    const unwrapped = await cc.unwrapKey('RSA-OAEP-256', wrapped.result);
    expect(Buffer.from(unwrapped.result).equals(dek)).toBe(true);
    // Random OAEP padding: two wraps differ.
    expect(Buffer.from((await cc.wrapKey('RSA-OAEP-256', dek)).result).equals(Buffer.from(wrapped.result))).toBe(false);

    // An unversioned kid: the SDK sends /keys/<name>//wrapkey, the emulator uses the current version.
    const un = cryptoClient(`${ep.vaultUrl}/keys/${name}`, ep.caCertPath, NO_RETRY);
    const w2 = await un.wrapKey('RSA-OAEP-256', dek);
    expect(Buffer.from((await cc.unwrapKey('RSA-OAEP-256', w2.result)).result).equals(dek)).toBe(true);

    const log = (await emulatorRequests(ep)).filter((e) => e.key === name && e.authorized);
    const crypto = log.filter((e) => e.op === 'wrapKey' || e.op === 'unwrapKey');
    expect(crypto.every((e) => e.alg === 'RSA-OAEP-256' && e.version === key.properties.version && e.status === 200)).toBe(true);
    expect(crypto.filter((e) => e.op === 'wrapKey')).toHaveLength(3); // RSA-OAEP-256 is never wrapped locally by the SDK
    expect(log.some((e) => e.path === `/keys/${name}//wrapkey`)).toBe(true);
  });

  it('unwraps RSA-OAEP and RSA1_5 on the server (the SDK wraps those locally with the public key)', async () => {
    const name = uniq('legacy');
    const key = await kc.createKey(name, 'RSA');
    const cc = cryptoClient(key.id!, ep.caCertPath, NO_RETRY);
    for (const alg of ['RSA-OAEP', 'RSA1_5'] as const) {
      const dek = randomBytes(32);
      const w = await cc.wrapKey(alg, dek);
      expect(Buffer.from((await cc.unwrapKey(alg, w.result)).result).equals(dek)).toBe(true);
      // A blob of one algorithm does not unwrap under another.
      const other = alg === 'RSA-OAEP' ? 'RSA-OAEP-256' : 'RSA-OAEP';
      expect(kvErrorShape(await rejection(cc.unwrapKey(other, w.result)))).toMatchObject({ statusCode: 400, code: 'BadParameter' });
    }
    const log = (await emulatorRequests(ep)).filter((e) => e.key === name && e.authorized);
    expect(log.filter((e) => e.op === 'wrapKey')).toHaveLength(0);
    expect(log.filter((e) => e.op === 'unwrapKey').map((e) => e.alg)).toEqual(['RSA-OAEP', 'RSA-OAEP-256', 'RSA1_5', 'RSA-OAEP']);
  });

  it('rotates on create: old versions stay unwrappable by their kid, listed in order (paged)', async () => {
    const name = uniq('rotate');
    const v1 = await kc.createKey(name, 'RSA');
    const dek = randomBytes(32);
    const blob1 = (await cryptoClient(v1.id!, ep.caCertPath, NO_RETRY).wrapKey('RSA-OAEP-256', dek)).result;
    const v2 = await kc.createKey(name, 'RSA');
    expect(v2.properties.version).not.toBe(v1.properties.version);
    expect((await kc.getKey(name)).id).toBe(v2.id);

    expect(Buffer.from((await cryptoClient(v1.id!, ep.caCertPath, NO_RETRY).unwrapKey('RSA-OAEP-256', blob1)).result).equals(dek)).toBe(
      true,
    );
    // The same blob under the new version (or the unversioned kid, now v2) is a decryption error: 400 BadParameter.
    for (const kid of [v2.id!, `${ep.vaultUrl}/keys/${name}`]) {
      const err = kvErrorShape(await rejection(cryptoClient(kid, ep.caCertPath, NO_RETRY).unwrapKey('RSA-OAEP-256', blob1)));
      expect(err).toEqual({ statusCode: 400, code: 'BadParameter', innerCode: undefined, message: 'The parameter is incorrect.' });
    }
    // ...and under another key.
    const other = await kc.createKey(uniq('other'), 'RSA');
    expect(
      kvErrorShape(await rejection(cryptoClient(other.id!, ep.caCertPath, NO_RETRY).unwrapKey('RSA-OAEP-256', blob1))).statusCode,
    ).toBe(400);

    const v3 = await kc.createKey(name, 'RSA');
    const all: string[] = [];
    const pages: number[] = [];
    for await (const page of kc.listPropertiesOfKeyVersions(name).byPage({ maxPageSize: 2 })) {
      pages.push(page.length);
      all.push(...page.map((p) => p.version!));
    }
    expect(all).toEqual([v1.properties.version, v2.properties.version, v3.properties.version]);
    expect(pages).toEqual([2, 1]);
    const names: string[] = [];
    for await (const p of kc.listPropertiesOfKeys()) names.push(p.name);
    expect(names).toContain(name);
  });

  it('documents an SDK behaviour: an unversioned CryptographyClient reports the kid it first fetched, even after rotation', async () => {
    const name = uniq('stale');
    const v1 = await kc.createKey(name, 'RSA');
    const un = cryptoClient(`${ep.vaultUrl}/keys/${name}`, ep.caCertPath, NO_RETRY);
    const dek = randomBytes(32);
    expect((await un.wrapKey('RSA-OAEP-256', dek)).keyID).toBe(v1.id);
    await kc.createKey(name, 'RSA'); // rotate: v2 is now current
    const w = await un.wrapKey('RSA-OAEP-256', dek);
    // The server wrapped with v2 (empty version = current), but the SDK still says v1: it drops the response kid.
    expect(w.keyID).toBe(v1.id);
    const last = (await emulatorRequests(ep)).filter((e) => e.key === name && e.op === 'wrapKey').at(-1);
    expect(last?.version).not.toBe(v1.properties.version);
    expect(
      kvErrorShape(await rejection(cryptoClient(v1.id!, ep.caCertPath, NO_RETRY).unwrapKey('RSA-OAEP-256', w.result))).statusCode,
    ).toBe(400);
  });

  it('refuses a disabled key version with 403 Forbidden / KeyDisabled until it is enabled again', async () => {
    const name = uniq('disable');
    const key = await kc.createKey(name, 'RSA');
    const dek = randomBytes(32);
    const blob = (await cryptoClient(key.id!, ep.caCertPath, NO_RETRY).wrapKey('RSA-OAEP-256', dek)).result;

    const updated = await kc.updateKeyProperties(name, key.properties.version!, { enabled: false });
    expect(updated.properties.enabled).toBe(false);

    const err = await rejection(cryptoClient(key.id!, ep.caCertPath, NO_RETRY).unwrapKey('RSA-OAEP-256', blob));
    expect(kvErrorShape(err)).toEqual({
      statusCode: 403,
      code: 'Forbidden',
      innerCode: 'KeyDisabled',
      message: 'Operation unwrapKey is not allowed on a disabled key.',
    });
    expect((err as { details?: unknown }).details).toEqual({
      error: { code: 'Forbidden', message: 'Operation unwrapKey is not allowed on a disabled key.', innerError: { code: 'KeyDisabled' } },
    });
    const wrapErr = kvErrorShape(await rejection(cryptoClient(key.id!, ep.caCertPath, NO_RETRY).wrapKey('RSA-OAEP-256', dek)));
    expect(wrapErr).toMatchObject({
      statusCode: 403,
      innerCode: 'KeyDisabled',
      message: 'Operation wrapKey is not allowed on a disabled key.',
    });
    expect(kvErrorShape(await rejection(kc.getKey(name)))).toMatchObject({ statusCode: 403, innerCode: 'KeyDisabled' });
    // Versions stay listable while disabled.
    for await (const p of kc.listPropertiesOfKeyVersions(name)) expect(p.enabled).toBe(false);

    await kc.updateKeyProperties(name, key.properties.version!, { enabled: true });
    const res = await cryptoClient(key.id!, ep.caCertPath, NO_RETRY).unwrapKey('RSA-OAEP-256', blob);
    expect(Buffer.from(res.result).equals(dek)).toBe(true);
  });

  it('answers 404 KeyNotFound for unknown keys and versions', async () => {
    const missing = uniq('missing');
    expect(kvErrorShape(await rejection(kc.getKey(missing)))).toMatchObject({ statusCode: 404, code: 'KeyNotFound' });
    const key = await kc.createKey(uniq('known'), 'RSA');
    const badVersion = `${ep.vaultUrl}/keys/${key.name}/0123456789abcdef0123456789abcdef`;
    const e = kvErrorShape(await rejection(cryptoClient(badVersion, ep.caCertPath, NO_RETRY).unwrapKey('RSA-OAEP-256', randomBytes(256))));
    expect(e.statusCode).toBe(404);
    expect(e.code).toBe('KeyNotFound');
    expect(e.message).toMatch(
      new RegExp(`^A key with \\(name/id\\) ${key.name}/0123456789abcdef0123456789abcdef was not found in this key vault`),
    );
    const unknownKid = `${ep.vaultUrl}/keys/${missing}/0123456789abcdef0123456789abcdef`;
    expect(
      kvErrorShape(await rejection(cryptoClient(unknownKid, ep.caCertPath, NO_RETRY).wrapKey('RSA-OAEP-256', randomBytes(32)))),
    ).toMatchObject({
      statusCode: 404,
      code: 'KeyNotFound',
    });
    expect(kvErrorShape(await rejection(kc.listPropertiesOfKeyVersions(missing).next()))).toMatchObject({ statusCode: 404 });
  });

  it('answers 400 BadParameter for an algorithm the key type does not support, bad sizes, types and names', async () => {
    const rsa = await kc.createKey(uniq('alg'), 'RSA');
    const cc = cryptoClient(rsa.id!, ep.caCertPath, NO_RETRY);
    const e = kvErrorShape(await rejection(cc.wrapKey('A256KW', randomBytes(32))));
    expect(e).toEqual({
      statusCode: 400,
      code: 'BadParameter',
      innerCode: undefined,
      message: "Algorithm 'A256KW' is not supported for key type RSA.",
    });
    expect(kvErrorShape(await rejection(cc.unwrapKey('A256KW', randomBytes(40)))).statusCode).toBe(400);
    // RSA-OAEP-256 limit for 2048-bit keys: 190 bytes.
    expect(kvErrorShape(await rejection(cc.wrapKey('RSA-OAEP-256', randomBytes(191)))).code).toBe('BadParameter');

    expect(kvErrorShape(await rejection(kc.createKey(uniq('size'), 'RSA', { keySize: 1024 })))).toMatchObject({
      statusCode: 400,
      code: 'BadParameter',
    });
    expect(kvErrorShape(await rejection(kc.createKey(uniq('ec'), 'EC')))).toMatchObject({ statusCode: 400, code: 'BadParameter' });
    expect(kvErrorShape(await rejection(kc.createKey('bad_name', 'RSA')))).toMatchObject({ statusCode: 400, code: 'BadParameter' });
  });

  it('wraps with A256KW on oct-HSM keys (Managed HSM style), server-side', async () => {
    const name = uniq('hsm');
    const key = await kc.createKey(name, 'oct-HSM', { keySize: 256 });
    expect(key.keyType).toBe('oct-HSM');
    expect(key.key?.k).toBeUndefined(); // never exported
    expect(key.keyOperations).toEqual(['encrypt', 'decrypt', 'wrapKey', 'unwrapKey']);
    const cc = cryptoClient(key.id!, ep.caCertPath, NO_RETRY);
    const dek = randomBytes(32);
    const w = await cc.wrapKey('A256KW', dek);
    expect(w.result.length).toBe(40); // RFC 3394: n+8
    expect(Buffer.from((await cc.unwrapKey('A256KW', w.result)).result).equals(dek)).toBe(true);
    // Deterministic (RFC 3394 has no randomness).
    expect(Buffer.from((await cc.wrapKey('A256KW', dek)).result).equals(Buffer.from(w.result))).toBe(true);

    const other = await kc.createKey(name, 'oct-HSM'); // rotation, default size 256
    const err = kvErrorShape(await rejection(cryptoClient(other.id!, ep.caCertPath, NO_RETRY).unwrapKey('A256KW', w.result)));
    expect(err).toMatchObject({ statusCode: 400, code: 'BadParameter', message: 'The parameter is incorrect.' });
    expect(kvErrorShape(await rejection(cc.wrapKey('RSA-OAEP-256', dek)))).toMatchObject({ statusCode: 400, code: 'BadParameter' });
    expect(kvErrorShape(await rejection(cc.wrapKey('A128KW', dek)))).toMatchObject({ statusCode: 400, code: 'BadParameter' });
    const small = await kc.createKey(uniq('hsm128'), 'oct-HSM', { keySize: 128 });
    const w128 = await cryptoClient(small.id!, ep.caCertPath, NO_RETRY).wrapKey('A128KW', dek);
    expect(w128.result.length).toBe(40);
  });

  it('refuses operations missing from key_ops with 403 (server side, remote-only client)', async () => {
    const key = await kc.createKey(uniq('ops'), 'RSA', { keyOps: ['unwrapKey'] });
    // A client given the key object checks key_ops itself; a raw request shows the server's answer.
    const r = await raw(ep, 'POST', `/keys/${key.name}/${key.properties.version}/wrapkey?api-version=7.4`, {
      headers: { authorization: 'Bearer x' },
      body: { alg: 'RSA-OAEP-256', value: randomBytes(32).toString('base64url') },
    });
    expect(r.status).toBe(403);
    expect(r.body).toEqual({
      error: {
        code: 'Forbidden',
        message: 'Operation wrapKey is not permitted on this key.',
        innererror: { code: 'KeyOperationForbidden' },
      },
    });
  });
});

describe('Key Vault emulator (own instance)', () => {
  let emu: AzureKvEmulator;
  let kc: KeyClient;

  beforeAll(async () => {
    emu = await startAzureKvEmulator();
    kc = keyClient(emu.vaultUrl, emu.caCertPath, NO_RETRY);
  });
  afterAll(async () => {
    await emu?.dispose();
  });

  it('keeps its keys across stop and start (state file)', async () => {
    const name = 'persist';
    const v1 = await kc.createKey(name, 'RSA');
    const v2 = await kc.createKey(name, 'RSA');
    await kc.updateKeyProperties(name, v1.properties.version!, { enabled: false });
    const dek = randomBytes(32);
    const blob = (await cryptoClient(v2.id!, emu.caCertPath, NO_RETRY).wrapKey('RSA-OAEP-256', dek)).result;
    const hsm = await kc.createKey('persist-hsm', 'oct-HSM');
    const kw = (await cryptoClient(hsm.id!, emu.caCertPath, NO_RETRY).wrapKey('A256KW', dek)).result;

    const saved = JSON.parse(readFileSync(emu.stateFile, 'utf8')) as { keys: Record<string, { order: string[] }> };
    expect(saved.keys[name]?.order).toEqual([v1.properties.version, v2.properties.version]);

    const t0 = performance.now();
    await emu.stop();
    const stopMs = performance.now() - t0;
    expect(emu.running).toBe(false);
    expect(stopMs).toBeLessThan(1000); // keep-alive connections are closed, not waited for
    await expect(kc.getKey(name)).rejects.toThrow();
    await emu.start();

    const res = await cryptoClient(v2.id!, emu.caCertPath, NO_RETRY).unwrapKey('RSA-OAEP-256', blob);
    expect(Buffer.from(res.result).equals(dek)).toBe(true);
    expect((await kc.getKey(name)).id).toBe(v2.id);
    expect(kvErrorShape(await rejection(kc.getKey(name, { version: v1.properties.version! })))).toMatchObject({
      statusCode: 403,
      innerCode: 'KeyDisabled',
    });
    const kwRes = await cryptoClient(hsm.id!, emu.caCertPath, NO_RETRY).unwrapKey('A256KW', kw);
    expect(Buffer.from(kwRes.result).equals(dek)).toBe(true);
  });

  it('injects 429 with Retry-After, 503, 403 per key (and op) from the faults file', async () => {
    const a = await kc.createKey('faults-a', 'RSA');
    const b = await kc.createKey('faults-b', 'RSA');
    const dek = randomBytes(32);
    const ca = cryptoClient(a.id!, emu.caCertPath, NO_RETRY);
    const cb = cryptoClient(b.id!, emu.caCertPath, NO_RETRY);
    const blobA = (await ca.wrapKey('RSA-OAEP-256', dek)).result;
    try {
      emu.setFaults({ '429': [{ name: 'faults-a', retryAfter: 2 }], '503': ['faults-b'] });
      const t = await rejection(ca.unwrapKey('RSA-OAEP-256', blobA));
      expect(kvErrorShape(t)).toMatchObject({ statusCode: 429, code: 'Throttled' });
      const headers = (t as { response?: { headers: { get(n: string): string | undefined } } }).response?.headers;
      expect(headers?.get('retry-after')).toBe('2');
      const u = await rejection(cb.wrapKey('RSA-OAEP-256', dek));
      expect(kvErrorShape(u)).toMatchObject({ statusCode: 503, code: 'ServiceUnavailable' });
      expect(
        (u as { response?: { headers: { get(n: string): string | undefined } } }).response?.headers.get('retry-after'),
      ).toBeUndefined();

      // 429 without retryAfter still carries Retry-After (1); "*" matches every key; `ops` narrows by operation.
      emu.setFaults({ '429': [{ name: '*', ops: ['unwrapKey'] }] });
      const t2 = await rejection(ca.unwrapKey('RSA-OAEP-256', blobA));
      expect((t2 as { response?: { headers: { get(n: string): string | undefined } } }).response?.headers.get('retry-after')).toBe('1');
      await ca.wrapKey('RSA-OAEP-256', dek);

      // `times`: only the first N matching requests fail; the SDK's own retries (default policy) then succeed.
      emu.setFaults({ '503': [{ name: 'faults-a', times: 1 }] });
      const retrying = cryptoClient(a.id!, emu.caCertPath, { retryOptions: { maxRetries: 2, retryDelayInMs: 10, maxRetryDelayInMs: 20 } });
      const ok = await retrying.unwrapKey('RSA-OAEP-256', blobA);
      expect(Buffer.from(ok.result).equals(dek)).toBe(true);

      emu.setFaults({ '403': ['faults-a'] });
      expect(kvErrorShape(await rejection(ca.unwrapKey('RSA-OAEP-256', blobA)))).toMatchObject({
        statusCode: 403,
        code: 'Forbidden',
        innerCode: 'ForbiddenByRbac',
      });

      emu.setFaults(null);
      expect(Buffer.from((await ca.unwrapKey('RSA-OAEP-256', blobA)).result).equals(dek)).toBe(true);
    } finally {
      emu.setFaults(null);
    }
  });

  it('resets connections and delays requests from the faults file', async () => {
    const a = await kc.createKey('reset-a', 'RSA');
    const b = await kc.createKey('reset-b', 'RSA');
    const dek = randomBytes(32);
    const ca = cryptoClient(a.id!, emu.caCertPath, NO_RETRY);
    const cb = cryptoClient(b.id!, emu.caCertPath, NO_RETRY);
    const blobA = (await ca.wrapKey('RSA-OAEP-256', dek)).result;
    await cb.wrapKey('RSA-OAEP-256', dek);
    try {
      emu.setFaults({ RESET: ['reset-a'] });
      const r = await rejection(ca.unwrapKey('RSA-OAEP-256', blobA));
      expect((r as { code?: string }).code).toBe('ECONNRESET');

      emu.setFaults({ DELAY_MS: 1500, DELAY_KEYS: ['reset-a'] });
      const t0 = performance.now();
      const late = await rejection(ca.unwrapKey('RSA-OAEP-256', blobA, { requestOptions: { timeout: 300 } }));
      expect(performance.now() - t0).toBeLessThan(1400);
      expect((late as Error).name).toBe('AbortError'); // requestOptions.timeout expired
      const t1 = performance.now();
      await cb.wrapKey('RSA-OAEP-256', dek);
      expect(performance.now() - t1).toBeLessThan(1000);
    } finally {
      emu.setFaults(null);
    }
  });

  it('keeps TLS verification on: a client without the emulator CA (or with another CA) is refused', async () => {
    expect(process.env.NODE_TLS_REJECT_UNAUTHORIZED).not.toBe('0');
    expect(process.env.NODE_EXTRA_CA_CERTS ?? '').not.toContain('kg-azkv-');
    await kc.createKey('tls', 'RSA');
    const plain = new KeyClient(emu.vaultUrl, fakeCredential, { disableChallengeResourceVerification: true, ...NO_RETRY });
    const e = (await rejection(plain.getKey('tls'))) as { code?: string; message?: string };
    expect(e.code).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');

    // Trusting another emulator's certificate does not help either.
    const shared = inject('azureKv');
    const wrongCa = new CryptographyClient(`${emu.vaultUrl}/keys/tls`, fakeCredential, testClientOptions(shared.caCertPath, NO_RETRY));
    const e2 = (await rejection(wrongCa.wrapKey('RSA-OAEP-256', randomBytes(32)))) as { code?: string };
    expect(e2.code).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|CERT/);

    // The certificate names localhost and 127.0.0.1.
    const ip = keyClient(emu.vaultUrl.replace('localhost', '127.0.0.1'), emu.caCertPath, NO_RETRY);
    expect((await ip.getKey('tls')).id).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/keys\/tls\//);
  });

  it('works with the SDK pipeline option tlsOptions.ca as well (no custom policy)', async () => {
    const client = new KeyClient(emu.vaultUrl, fakeCredential, {
      disableChallengeResourceVerification: true,
      tlsOptions: { ca: readFileSync(emu.caCertPath, 'utf8') },
      ...NO_RETRY,
    });
    await kc.createKey('tls-options', 'RSA');
    expect((await client.getKey('tls-options')).name).toBe('tls-options');
  });
});
