import { describe, expect, it } from 'vitest';
import { soleLease } from '../../../adapters/support.js';
import { GcpKmsWrapper, GRPC, classify, int64, parseGcpKek, wrapAad, type GcpKmsPort } from '../../../adapters/gcp/index.js';
import { crc32c } from '../../../src/crypto/crc32c.js';

const KEY = 'projects/p1/locations/global/keyRings/r1/cryptoKeys/k1';
const ctx = { keyId: 'pg/x', version: 2, signal: new AbortController().signal };

describe('gcp classify()', () => {
  it.each([
    [GRPC.PERMISSION_DENIED, 'encrypt', 'KMS_DENIED'],
    [GRPC.UNAUTHENTICATED, 'decrypt', 'KMS_DENIED'],
    [GRPC.NOT_FOUND, 'decrypt', 'KMS_DENIED'],
    [GRPC.FAILED_PRECONDITION, 'decrypt', 'KMS_DENIED'],
    [GRPC.INVALID_ARGUMENT, 'decrypt', 'DECRYPT_FAILED'],
    [GRPC.INVALID_ARGUMENT, 'encrypt', 'INTERNAL'],
    [GRPC.RESOURCE_EXHAUSTED, 'encrypt', 'THROTTLED'],
    [GRPC.UNAVAILABLE, 'decrypt', 'KMS_UNAVAILABLE'],
    [GRPC.DEADLINE_EXCEEDED, 'decrypt', 'KMS_UNAVAILABLE'],
    [GRPC.CANCELLED, 'decrypt', 'KMS_UNAVAILABLE'],
    [GRPC.INTERNAL, 'encrypt', 'KMS_UNAVAILABLE'],
    [GRPC.UNIMPLEMENTED, 'encrypt', 'INTERNAL'],
    [undefined, 'encrypt', 'INTERNAL'],
  ] as const)('code %s on %s → %s', (code, op, expected) => {
    const err = Object.assign(new Error(`${code} raw server text projects/p1`), code === undefined ? {} : { code });
    const mapped = classify(err, op);
    expect(mapped.code).toBe(expected);
    expect(mapped.cause).toBe(err);
    expect(mapped.message).toMatch(/^Cloud KMS: /);
    expect(mapped.message).not.toContain('raw server text');
  });
});

describe('gcp classify() retry hints', () => {
  /** As google-gax decodes a google.rpc.RetryInfo from the grpc-status-details-bin trailer (seconds may be a Long). */
  const withRetryInfo = (code: number, seconds: unknown, nanos = 0) =>
    Object.assign(new Error('raw'), { code, statusDetails: [{ reason: 'RATE_LIMIT_EXCEEDED' }, { retryDelay: { seconds, nanos } }] });

  it('hands the RetryInfo delay of RESOURCE_EXHAUSTED or UNAVAILABLE to the guard', () => {
    expect(classify(withRetryInfo(GRPC.RESOURCE_EXHAUSTED, '2', 500_000_000), 'decrypt')).toMatchObject({
      code: 'THROTTLED',
      retryAfterMs: 2500,
    });
    expect(classify(withRetryInfo(GRPC.UNAVAILABLE, { toString: () => '1' }), 'encrypt').retryAfterMs).toBe(1000);
    expect(classify(withRetryInfo(GRPC.RESOURCE_EXHAUSTED, 0, 200_000_000), 'decrypt').retryAfterMs).toBe(200);
  });

  it('no hint without RetryInfo, or on a refusal that is not an outage', () => {
    expect(classify(Object.assign(new Error('x'), { code: GRPC.RESOURCE_EXHAUSTED }), 'decrypt').retryAfterMs).toBeUndefined();
    expect(classify(withRetryInfo(GRPC.PERMISSION_DENIED, 5), 'decrypt')).toMatchObject({ code: 'KMS_DENIED', retryAfterMs: undefined });
  });
});

describe('gcp-kms KEK URIs and helpers', () => {
  it('parses a CryptoKey name and refuses anything else', () => {
    expect(parseGcpKek(`gcp-kms://${KEY}`)).toBe(KEY);
    for (const bad of [
      'gcp-kms://',
      `gcp-kms://${KEY}/cryptoKeyVersions/1`,
      'gcp-kms://projects/p/keyRings/r/cryptoKeys/k',
      `aws-kms://${KEY}`,
    ]) {
      expect(() => parseGcpKek(bad)).toThrow(/gcp-kms KEK URI must be/);
    }
  });

  it('binds the AAD to key id and version', () => {
    expect(wrapAad({ keyId: 'pg/x', version: 2 }).toString()).toBe('kmsgw/v1 pg/x 2');
  });

  it('reads Int64Value in every form the client may decode it to', () => {
    expect(int64({ value: 42 })).toBe(42);
    expect(int64({ value: '4294967295' })).toBe(4294967295);
    expect(int64({ value: { toString: () => '7' } })).toBe(7);
    expect(int64(null)).toBeUndefined();
    expect(int64({})).toBeUndefined();
  });
});

/** A narrow fake port, to test the integrity checks around the calls (the real client is tested against the emulator). */
function fakePort(
  tamper: Partial<{ name: string; verified: boolean; ctCrc: number; ptCrc: number }> = {},
): GcpKmsPort & { requests: unknown[] } {
  const requests: unknown[] = [];
  return {
    requests,
    async encrypt(req) {
      requests.push(req);
      const ct = Buffer.concat([Buffer.from('ct:'), Buffer.from(req.plaintext as Uint8Array)]);
      return {
        name: tamper.name ?? `${KEY}/cryptoKeyVersions/3`,
        ciphertext: ct,
        ciphertextCrc32c: { value: tamper.ctCrc ?? crc32c(ct) },
        verifiedPlaintextCrc32c: tamper.verified ?? true,
        verifiedAdditionalAuthenticatedDataCrc32c: true,
      };
    },
    async decrypt(req) {
      requests.push(req);
      const pt = Buffer.from((req.ciphertext as Uint8Array).subarray(3));
      return { plaintext: pt, plaintextCrc32c: { value: tamper.ptCrc ?? crc32c(pt) } };
    },
  };
}

describe('GcpKmsWrapper integrity checks', () => {
  const dek = Buffer.alloc(32, 9);

  it('sends CRC32C for plaintext and AAD, and records the CryptoKeyVersion', async () => {
    const port = fakePort();
    const w = new GcpKmsWrapper(`gcp-kms://${KEY}`, soleLease(port), 1000);
    const wrapped = await w.wrap(dek, ctx);
    expect(wrapped.kekVersion).toBe(`${KEY}/cryptoKeyVersions/3`);
    expect(port.requests[0]).toMatchObject({
      name: KEY,
      plaintextCrc32c: { value: crc32c(dek) },
      additionalAuthenticatedDataCrc32c: { value: crc32c(wrapAad(ctx)) },
    });
    expect((await w.unwrap(wrapped, ctx)).equals(dek)).toBe(true);
    expect(port.requests[1]).toMatchObject({ name: KEY, ciphertextCrc32c: { value: crc32c(wrapped.blob) } });
  });

  it.each([
    ['an unverified plaintext checksum', { verified: false }, 'KMS_UNAVAILABLE'],
    ['a ciphertext checksum mismatch', { ctCrc: 1 }, 'KMS_UNAVAILABLE'],
    ['a response for another key', { name: 'projects/p1/locations/global/keyRings/r1/cryptoKeys/other/cryptoKeyVersions/1' }, 'INTERNAL'],
  ])('refuses %s on wrap', async (_label, tamper, code) => {
    const w = new GcpKmsWrapper(`gcp-kms://${KEY}`, soleLease(fakePort(tamper)), 1000);
    await expect(w.wrap(dek, ctx)).rejects.toMatchObject({ code });
  });

  it('refuses a plaintext checksum mismatch on unwrap and zeroizes what it got', async () => {
    const good = new GcpKmsWrapper(`gcp-kms://${KEY}`, soleLease(fakePort()), 1000);
    const wrapped = await good.wrap(dek, ctx);
    const port = fakePort({ ptCrc: 5 });
    let seen: Buffer | undefined;
    const spy: GcpKmsPort = {
      encrypt: (req, limits) => port.encrypt(req, limits),
      decrypt: async (req, limits) => {
        const res = await port.decrypt(req, limits);
        seen = res.plaintext as Buffer;
        return res;
      },
    };
    const bad = new GcpKmsWrapper(`gcp-kms://${KEY}`, soleLease(spy), 1000);
    await expect(bad.unwrap(wrapped, ctx)).rejects.toMatchObject({
      code: 'KMS_UNAVAILABLE',
      message: 'Cloud KMS: the plaintext failed its integrity check',
    });
    expect(seen?.every((b) => b === 0)).toBe(true);
  });
});
