import { describe, expect, it } from 'vitest';
import { soleLease } from '../../../adapters/support.js';
import { AzureKeyVaultWrapper, classify, keyUrl, kidBelongsTo, parseAzureKek, type AzureKeyPort } from '../../../adapters/azure/index.js';

const VER = '0123456789abcdef0123456789abcdef';
const ctx = { keyId: 'pg/x', version: 1, signal: new AbortController().signal };

function restError(statusCode: number | undefined, extra: object = {}) {
  return Object.assign(new Error('raw service text with https://vault.example/keys/k'), { name: 'RestError', statusCode, ...extra });
}

const headers = (retryAfter: string) => ({ response: { headers: { get: (n: string) => (n === 'retry-after' ? retryAfter : undefined) } } });

describe('azure classify()', () => {
  it.each([
    [
      '403 KeyDisabled',
      restError(403, { code: 'Forbidden', details: { error: { code: 'Forbidden', innererror: { code: 'KeyDisabled' } } } }),
      'unwrap',
      'KMS_DENIED',
      'Azure Key Vault: the key is disabled',
    ],
    ['403', restError(403, { code: 'Forbidden' }), 'wrap', 'KMS_DENIED', 'Azure Key Vault: access to the key was denied'],
    ['401', restError(401), 'wrap', 'KMS_DENIED', 'Azure Key Vault: access to the key was denied'],
    ['404', restError(404, { code: 'KeyNotFound' }), 'unwrap', 'KMS_DENIED', 'Azure Key Vault: the key or key version was not found'],
    ['429 with Retry-After', restError(429, headers('7')), 'wrap', 'THROTTLED', 'Azure Key Vault: request rate exceeded; retry after 7 s'],
    ['429 without', restError(429), 'wrap', 'THROTTLED', 'Azure Key Vault: request rate exceeded'],
    [
      '400 on unwrap',
      restError(400, { code: 'BadParameter' }),
      'unwrap',
      'DECRYPT_FAILED',
      'Azure Key Vault: the wrapped key does not unwrap under this key version',
    ],
    ['400 on wrap', restError(400, { code: 'BadParameter' }), 'wrap', 'INTERNAL', 'Azure Key Vault: the request was refused as invalid'],
    ['500', restError(500), 'wrap', 'KMS_UNAVAILABLE', 'Azure Key Vault: service error'],
    ['503', restError(503), 'unwrap', 'KMS_UNAVAILABLE', 'Azure Key Vault: service error'],
    ['ECONNREFUSED', restError(undefined, { code: 'ECONNREFUSED' }), 'unwrap', 'KMS_UNAVAILABLE', 'Azure Key Vault: vault unreachable'],
    [
      'REQUEST_SEND_ERROR',
      restError(undefined, { code: 'REQUEST_SEND_ERROR' }),
      'unwrap',
      'KMS_UNAVAILABLE',
      'Azure Key Vault: vault unreachable',
    ],
    [
      'AbortError',
      Object.assign(new Error('aborted'), { name: 'AbortError' }),
      'unwrap',
      'KMS_UNAVAILABLE',
      'Azure Key Vault: request was cut off by its deadline',
    ],
    [
      'untrusted TLS',
      restError(undefined, { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }),
      'wrap',
      'KMS_DENIED',
      "Azure Key Vault: the vault's TLS certificate is not trusted",
    ],
    [
      'no credential',
      Object.assign(new Error('no creds'), { name: 'CredentialUnavailableError' }),
      'wrap',
      'KMS_DENIED',
      'Azure Key Vault: no usable Azure credential',
    ],
    ['something else', new Error('??'), 'wrap', 'INTERNAL', 'Azure Key Vault: unexpected error'],
  ] as const)('%s → %s', (_label, err, op, code, message) => {
    const mapped = classify(err, op);
    expect(mapped).toMatchObject({ code, message });
    expect(mapped.cause).toBe(err);
  });

  it('hands the Retry-After of a 429 or 5xx to the guard as retryAfterMs (delta-seconds or an HTTP date)', () => {
    expect(classify(restError(429, headers('7')), 'unwrap').retryAfterMs).toBe(7000);
    expect(classify(restError(503, headers('2')), 'unwrap')).toMatchObject({ code: 'KMS_UNAVAILABLE', retryAfterMs: 2000 });
    const date = classify(restError(429, headers(new Date(Date.now() + 30_000).toUTCString())), 'wrap').retryAfterMs as number;
    expect(date).toBeGreaterThan(28_000);
    expect(date).toBeLessThanOrEqual(30_000);
    expect(classify(restError(429), 'wrap').retryAfterMs).toBeUndefined();
    expect(classify(restError(429, headers('soon')), 'wrap')).toMatchObject({ code: 'THROTTLED', retryAfterMs: undefined });
    // A hint on a refusal that is not an outage is not a reason to wait.
    expect(classify(restError(403, headers('5')), 'wrap').retryAfterMs).toBeUndefined();
  });
});

describe('azure-kv KEK URIs and kids', () => {
  it('parses vault host, port, key name and optional version', () => {
    expect(parseAzureKek('azure-kv://myvault.vault.azure.net/keys/pg-kek')).toEqual({
      vaultUrl: 'https://myvault.vault.azure.net',
      name: 'pg-kek',
    });
    expect(parseAzureKek(`azure-kv://localhost:8443/keys/k1/${VER}`)).toEqual({
      vaultUrl: 'https://localhost:8443',
      name: 'k1',
      version: VER,
    });
    for (const bad of [
      'azure-kv://',
      'azure-kv://v/keys/',
      'azure-kv://v/secrets/x',
      'azure-kv://v/keys/a_b',
      'azure-kv://v/keys/k/short',
      'aws-kms://v/keys/k',
    ]) {
      expect(() => parseAzureKek(bad)).toThrow(/azure-kv KEK URI must be/);
    }
  });

  it('accepts only kids of the same vault and key (and version, when pinned)', () => {
    const kek = parseAzureKek('azure-kv://v.vault.azure.net/keys/k1');
    expect(keyUrl(kek)).toBe('https://v.vault.azure.net/keys/k1');
    expect(kidBelongsTo(`https://v.vault.azure.net/keys/k1/${VER}`, kek)).toBe(true);
    expect(kidBelongsTo(`https://other.vault.azure.net/keys/k1/${VER}`, kek)).toBe(false);
    expect(kidBelongsTo(`https://v.vault.azure.net/keys/k10/${VER}`, kek)).toBe(false);
    expect(kidBelongsTo('https://v.vault.azure.net/keys/k1/', kek)).toBe(false);
    const pinned = parseAzureKek(`azure-kv://v.vault.azure.net/keys/k1/${VER}`);
    expect(kidBelongsTo(`https://v.vault.azure.net/keys/k1/${'f'.repeat(32)}`, pinned)).toBe(false);
  });
});

describe('AzureKeyVaultWrapper', () => {
  function port(kid: string): AzureKeyPort & { calls: string[] } {
    const calls: string[] = [];
    return {
      calls,
      currentKid: async (vaultUrl, name) => {
        calls.push(`current ${vaultUrl} ${name}`);
        return kid;
      },
      wrapKey: async (k, alg, key) => {
        calls.push(`wrap ${k} ${alg}`);
        return { result: Buffer.from(key).reverse(), keyID: k };
      },
      unwrapKey: async (k, alg, blob) => {
        calls.push(`unwrap ${k} ${alg}`);
        return { result: Buffer.from(blob).reverse() };
      },
    };
  }

  it('wraps with the current version named explicitly, stores its kid, and unwraps with exactly that kid', async () => {
    const kid = `https://v.vault.azure.net/keys/k1/${VER}`;
    const p = port(kid);
    const w = new AzureKeyVaultWrapper('azure-kv://v.vault.azure.net/keys/k1', soleLease(p), 'RSA-OAEP-256', 1000);
    const dek = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    const wrapped = await w.wrap(dek, ctx);
    expect(wrapped.kekVersion).toBe(kid);
    expect((await w.unwrap(wrapped, ctx)).equals(dek)).toBe(true);
    expect(p.calls).toEqual(['current https://v.vault.azure.net k1', `wrap ${kid} RSA-OAEP-256`, `unwrap ${kid} RSA-OAEP-256`]);
  });

  it('a pinned KEK version wraps without a lookup', async () => {
    const kid = `https://v.vault.azure.net/keys/k1/${VER}`;
    const p = port(kid);
    const w = new AzureKeyVaultWrapper(`azure-kv://v.vault.azure.net/keys/k1/${VER}`, soleLease(p), 'A256KW', 1000);
    expect((await w.wrap(Buffer.alloc(32, 1), ctx)).kekVersion).toBe(kid);
    expect(p.calls).toEqual([`wrap ${kid} A256KW`]);
  });

  it('refuses an answer for another key, and a stored kid of another vault', async () => {
    const w = new AzureKeyVaultWrapper(
      'azure-kv://v.vault.azure.net/keys/k1',
      soleLease(port(`https://evil.example/keys/k1/${VER}`)),
      'RSA-OAEP-256',
      1000,
    );
    await expect(w.wrap(Buffer.alloc(32), ctx)).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(w.unwrap({ blob: Buffer.alloc(256), kekVersion: `https://evil.example/keys/k1/${VER}` }, ctx)).rejects.toMatchObject({
      code: 'DECRYPT_FAILED',
    });
  });
});
