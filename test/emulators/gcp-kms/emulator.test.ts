// Tests of the Cloud KMS emulator itself, all through the real @google-cloud/kms client.
import { readFileSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { status } from '@grpc/grpc-js';
import type { KeyManagementServiceClient } from '@google-cloud/kms';
import { crc32c } from './crc32c.mjs';
import { adminClient, createKey, startGcpKmsEmulator, type GcpKmsEmulator } from '../../helpers/gcp-kms.js';

/** Resolves to the rejection of `p` (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<{ code: number; details: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return err as { code: number; details: string; message: string };
  }
  throw new Error('expected the call to fail');
}

const NO_RETRY = { retry: { retryCodes: [] as number[] } } as const;

describe('crc32c', () => {
  it('matches the standard check value', () => {
    expect(crc32c('123456789')).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    expect(crc32c(Buffer.alloc(32, 0))).toBe(0x8a9136aa); // RFC 3720 B.4: 32 bytes of zeros
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43); // RFC 3720 B.4: 32 bytes of 0xff
  });
});

describe('Cloud KMS emulator (shared, via inject)', () => {
  let client: KeyManagementServiceClient;
  const ring = `emu-${randomUUID().slice(0, 8)}`;
  let keyName: string;
  let otherKey: string;

  beforeAll(async () => {
    client = adminClient(inject('gcpKms'));
    keyName = await createKey(client, { keyRing: ring, key: 'main' });
    otherKey = await createKey(client, { keyRing: ring, key: 'other' });
  });
  afterAll(async () => {
    await client?.close();
  });

  it('creates key rings and keys with Cloud KMS names, errors and defaults', async () => {
    expect(keyName).toBe(`projects/kmsgw-test/locations/global/keyRings/${ring}/cryptoKeys/main`);
    const [key] = await client.getCryptoKey({ name: keyName });
    expect(key.purpose).toBe('ENCRYPT_DECRYPT');
    expect(key.primary?.name).toBe(`${keyName}/cryptoKeyVersions/1`);
    expect(key.primary?.state).toBe('ENABLED');
    expect(key.primary?.algorithm).toBe('GOOGLE_SYMMETRIC_ENCRYPTION');
    expect(key.primary?.protectionLevel).toBe('SOFTWARE');
    expect(key.versionTemplate?.algorithm).toBe('GOOGLE_SYMMETRIC_ENCRYPTION');

    const parent = 'projects/kmsgw-test/locations/global';
    const [kr] = await client.getKeyRing({ name: `${parent}/keyRings/${ring}` });
    expect(kr.name).toBe(`${parent}/keyRings/${ring}`);
    expect(Number(kr.createTime?.seconds)).toBeGreaterThan(0);

    const dupRing = await rejection(client.createKeyRing({ parent, keyRingId: ring, keyRing: {} }));
    expect(dupRing.code).toBe(status.ALREADY_EXISTS);
    expect(dupRing.details).toBe(`KeyRing ${parent}/keyRings/${ring} already exists.`);
    const dupKey = await rejection(
      client.createCryptoKey({ parent: `${parent}/keyRings/${ring}`, cryptoKeyId: 'main', cryptoKey: { purpose: 'ENCRYPT_DECRYPT' } }),
    );
    expect(dupKey.code).toBe(status.ALREADY_EXISTS);
    expect(dupKey.details).toBe(`CryptoKey ${keyName} already exists.`);

    const noRing = await rejection(
      client.createCryptoKey({ parent: `${parent}/keyRings/nope-${ring}`, cryptoKeyId: 'k', cryptoKey: { purpose: 'ENCRYPT_DECRYPT' } }),
    );
    expect(noRing.code).toBe(status.NOT_FOUND);
    expect((await rejection(client.getKeyRing({ name: `${parent}/keyRings/nope-${ring}` }))).code).toBe(status.NOT_FOUND);
  });

  it('round-trips with AES-256-GCM under the primary version', async () => {
    const plaintext = randomBytes(32);
    const aad = Buffer.from('kmsgw:tenant-1');
    const [enc] = await client.encrypt({ name: keyName, plaintext, additionalAuthenticatedData: aad });
    expect(enc.name).toBe(`${keyName}/cryptoKeyVersions/1`);
    expect(enc.protectionLevel).toBe('SOFTWARE');
    expect(enc.verifiedPlaintextCrc32c).toBe(false);
    expect(enc.verifiedAdditionalAuthenticatedDataCrc32c).toBe(false);
    const ciphertext = Buffer.from(enc.ciphertext as Uint8Array);
    expect(ciphertext.length).toBeGreaterThan(plaintext.length + 16);
    expect(ciphertext.includes(plaintext)).toBe(false);

    const [enc2] = await client.encrypt({ name: keyName, plaintext, additionalAuthenticatedData: aad });
    expect(Buffer.from(enc2.ciphertext as Uint8Array).equals(ciphertext)).toBe(false); // random nonce

    const [dec] = await client.decrypt({ name: keyName, ciphertext, additionalAuthenticatedData: aad });
    expect(Buffer.from(dec.plaintext as Uint8Array).equals(plaintext)).toBe(true);
    expect(dec.usedPrimary).toBe(true);
    expect(dec.protectionLevel).toBe('SOFTWARE');

    // Empty AAD and a named version work too.
    const [enc3] = await client.encrypt({ name: `${keyName}/cryptoKeyVersions/1`, plaintext });
    expect(enc3.name).toBe(`${keyName}/cryptoKeyVersions/1`);
    const [dec3] = await client.decrypt({ name: keyName, ciphertext: enc3.ciphertext });
    expect(Buffer.from(dec3.plaintext as Uint8Array).equals(plaintext)).toBe(true);
  });

  it('verifies request CRC32Cs and returns correct response CRC32Cs (Int64Value as decimal strings)', async () => {
    const plaintext = randomBytes(48);
    const aad = Buffer.from('context');
    const [enc] = await client.encrypt({
      name: keyName,
      plaintext,
      additionalAuthenticatedData: aad,
      plaintextCrc32c: { value: crc32c(plaintext) },
      additionalAuthenticatedDataCrc32c: { value: String(crc32c(aad)) },
    });
    expect(enc.verifiedPlaintextCrc32c).toBe(true);
    expect(enc.verifiedAdditionalAuthenticatedDataCrc32c).toBe(true);
    const ciphertext = Buffer.from(enc.ciphertext as Uint8Array);
    expect(enc.ciphertextCrc32c?.value).toBe(String(crc32c(ciphertext)));

    // Only the plaintext checksum given: only that one is reported verified.
    const [encP] = await client.encrypt({ name: keyName, plaintext, plaintextCrc32c: { value: crc32c(plaintext) } });
    expect(encP.verifiedPlaintextCrc32c).toBe(true);
    expect(encP.verifiedAdditionalAuthenticatedDataCrc32c).toBe(false);

    const [dec] = await client.decrypt({
      name: keyName,
      ciphertext,
      additionalAuthenticatedData: aad,
      ciphertextCrc32c: { value: crc32c(ciphertext) },
      additionalAuthenticatedDataCrc32c: { value: crc32c(aad) },
    });
    expect(dec.plaintextCrc32c?.value).toBe(String(crc32c(plaintext)));

    const bad = (crc: number) => ({ value: (crc + 1) % 2 ** 32 });
    const e1 = await rejection(client.encrypt({ name: keyName, plaintext, plaintextCrc32c: bad(crc32c(plaintext)) }));
    expect(e1.code).toBe(status.INVALID_ARGUMENT);
    expect(e1.details).toBe('The checksum in field plaintext_crc32c did not match the data in field plaintext.');
    const e2 = await rejection(
      client.encrypt({ name: keyName, plaintext, additionalAuthenticatedData: aad, additionalAuthenticatedDataCrc32c: bad(crc32c(aad)) }),
    );
    expect(e2.code).toBe(status.INVALID_ARGUMENT);
    expect(e2.details).toBe(
      'The checksum in field additional_authenticated_data_crc32c did not match the data in field additional_authenticated_data.',
    );
    const e3 = await rejection(
      client.decrypt({ name: keyName, ciphertext, additionalAuthenticatedData: aad, ciphertextCrc32c: bad(crc32c(ciphertext)) }),
    );
    expect(e3.code).toBe(status.INVALID_ARGUMENT);
    expect(e3.details).toBe('The checksum in field ciphertext_crc32c did not match the data in field ciphertext.');
    const e4 = await rejection(
      client.decrypt({ name: keyName, ciphertext, additionalAuthenticatedData: aad, additionalAuthenticatedDataCrc32c: bad(crc32c(aad)) }),
    );
    expect(e4.code).toBe(status.INVALID_ARGUMENT);
    // A checksum of 0 is a set field (proto3 wrapper presence), not "absent".
    const e5 = await rejection(client.encrypt({ name: keyName, plaintext: Buffer.from('x'), plaintextCrc32c: { value: 0 } }));
    expect(e5.code).toBe(status.INVALID_ARGUMENT);
  });

  it('rejects a wrong AAD, a tampered ciphertext and another key’s ciphertext with INVALID_ARGUMENT', async () => {
    const plaintext = randomBytes(32);
    const [enc] = await client.encrypt({ name: keyName, plaintext, additionalAuthenticatedData: Buffer.from('a') });
    const ciphertext = Buffer.from(enc.ciphertext as Uint8Array);

    const wrongAad = await rejection(client.decrypt({ name: keyName, ciphertext, additionalAuthenticatedData: Buffer.from('b') }));
    expect(wrongAad.code).toBe(status.INVALID_ARGUMENT);
    expect(wrongAad.details).toBe('Decryption failed: the ciphertext is invalid.');
    const noAad = await rejection(client.decrypt({ name: keyName, ciphertext }));
    expect(noAad.code).toBe(status.INVALID_ARGUMENT);

    const tampered = Buffer.from(ciphertext);
    tampered[tampered.length - 20]! ^= 1;
    const t = await rejection(client.decrypt({ name: keyName, ciphertext: tampered, additionalAuthenticatedData: Buffer.from('a') }));
    expect(t.code).toBe(status.INVALID_ARGUMENT);
    expect(t.details).toBe('Decryption failed: the ciphertext is invalid.');
    const garbage = await rejection(client.decrypt({ name: keyName, ciphertext: randomBytes(60) }));
    expect(garbage.code).toBe(status.INVALID_ARGUMENT);

    const other = await rejection(client.decrypt({ name: otherKey, ciphertext, additionalAuthenticatedData: Buffer.from('a') }));
    expect(other.code).toBe(status.INVALID_ARGUMENT);
    expect(other.details).toBe("Decryption failed: verify that 'name' refers to the correct CryptoKey.");
  });

  it('rejects unknown keys with NOT_FOUND and plaintexts over 64 KiB with INVALID_ARGUMENT', async () => {
    const missing = `projects/kmsgw-test/locations/global/keyRings/${ring}/cryptoKeys/missing`;
    const d = await rejection(client.decrypt({ name: missing, ciphertext: randomBytes(60) }));
    expect(d.code).toBe(status.NOT_FOUND);
    expect(d.details).toBe(`Resource '${missing}' was not found`);
    expect((await rejection(client.encrypt({ name: missing, plaintext: Buffer.from('x') }))).code).toBe(status.NOT_FOUND);
    expect((await rejection(client.getCryptoKey({ name: missing }))).code).toBe(status.NOT_FOUND);
    expect((await rejection(client.encrypt({ name: `${keyName}/cryptoKeyVersions/99`, plaintext: Buffer.from('x') }))).code).toBe(
      status.NOT_FOUND,
    );

    await client.encrypt({ name: keyName, plaintext: Buffer.alloc(64 * 1024) });
    const big = await rejection(client.encrypt({ name: keyName, plaintext: Buffer.alloc(64 * 1024 + 1) }));
    expect(big.code).toBe(status.INVALID_ARGUMENT);
  });

  it('keeps old ciphertexts decryptable after a new primary version', async () => {
    const name = await createKey(client, { keyRing: ring, key: 'rotate' });
    const [old] = await client.encrypt({ name, plaintext: Buffer.from('v1 data') });
    expect(old.name).toBe(`${name}/cryptoKeyVersions/1`);

    const [v2] = await client.createCryptoKeyVersion({ parent: name, cryptoKeyVersion: {} });
    expect(v2.name).toBe(`${name}/cryptoKeyVersions/2`);
    expect(v2.state).toBe('ENABLED');
    // A new version does not become primary by itself.
    expect((await client.getCryptoKey({ name }))[0].primary?.name).toBe(`${name}/cryptoKeyVersions/1`);

    const [updated] = await client.updateCryptoKeyPrimaryVersion({ name, cryptoKeyVersionId: '2' });
    expect(updated.primary?.name).toBe(`${name}/cryptoKeyVersions/2`);
    const [fresh] = await client.encrypt({ name, plaintext: Buffer.from('v2 data') });
    expect(fresh.name).toBe(`${name}/cryptoKeyVersions/2`);

    const [decOld] = await client.decrypt({ name, ciphertext: old.ciphertext });
    expect(Buffer.from(decOld.plaintext as Uint8Array).toString()).toBe('v1 data');
    expect(decOld.usedPrimary).toBe(false);
    const [decNew] = await client.decrypt({ name, ciphertext: fresh.ciphertext });
    expect(Buffer.from(decNew.plaintext as Uint8Array).toString()).toBe('v2 data');
    expect(decNew.usedPrimary).toBe(true);

    const [versions] = await client.listCryptoKeyVersions({ parent: name });
    expect(versions.map((v) => v.name)).toEqual([`${name}/cryptoKeyVersions/1`, `${name}/cryptoKeyVersions/2`]);
    const [v1] = await client.getCryptoKeyVersion({ name: `${name}/cryptoKeyVersions/1` });
    expect(v1.state).toBe('ENABLED');
    expect((await rejection(client.updateCryptoKeyPrimaryVersion({ name, cryptoKeyVersionId: '7' }))).code).toBe(status.NOT_FOUND);
  });

  it('refuses a disabled version with FAILED_PRECONDITION until it is enabled again', async () => {
    const name = await createKey(client, { keyRing: ring, key: 'disable' });
    const [enc] = await client.encrypt({ name, plaintext: Buffer.from('secret') });
    const v1 = `${name}/cryptoKeyVersions/1`;

    const [disabled] = await client.updateCryptoKeyVersion({
      cryptoKeyVersion: { name: v1, state: 'DISABLED' },
      updateMask: { paths: ['state'] },
    });
    expect(disabled.state).toBe('DISABLED');
    expect((await client.getCryptoKey({ name }))[0].primary?.state).toBe('DISABLED');

    const d = await rejection(client.decrypt({ name, ciphertext: enc.ciphertext }));
    expect(d.code).toBe(status.FAILED_PRECONDITION);
    expect(d.details).toBe(`${v1} is not enabled, current state is: DISABLED.`);
    const e = await rejection(client.encrypt({ name, plaintext: Buffer.from('x') }));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    expect(e.details).toBe(`${v1} is not enabled, current state is: DISABLED.`);

    const noMask = await rejection(client.updateCryptoKeyVersion({ cryptoKeyVersion: { name: v1, state: 'ENABLED' } }));
    expect(noMask.code).toBe(status.INVALID_ARGUMENT);

    await client.updateCryptoKeyVersion({ cryptoKeyVersion: { name: v1, state: 'ENABLED' }, updateMask: { paths: ['state'] } });
    const [dec] = await client.decrypt({ name, ciphertext: enc.ciphertext });
    expect(Buffer.from(dec.plaintext as Uint8Array).toString()).toBe('secret');
  });

  it('refuses a destroyed version with FAILED_PRECONDITION; restore brings it back as DISABLED', async () => {
    const name = await createKey(client, { keyRing: ring, key: 'destroy' });
    const [enc] = await client.encrypt({ name, plaintext: Buffer.from('secret') });
    const v1 = `${name}/cryptoKeyVersions/1`;

    const [destroyed] = await client.destroyCryptoKeyVersion({ name: v1 });
    expect(destroyed.state).toBe('DESTROY_SCHEDULED');
    expect(Number(destroyed.destroyTime?.seconds)).toBeGreaterThan(Date.now() / 1000 + 29 * 24 * 3600);

    const d = await rejection(client.decrypt({ name, ciphertext: enc.ciphertext }));
    expect(d.code).toBe(status.FAILED_PRECONDITION);
    expect(d.details).toBe(`${v1} is not enabled, current state is: DESTROY_SCHEDULED.`);
    expect((await rejection(client.encrypt({ name, plaintext: Buffer.from('x') }))).code).toBe(status.FAILED_PRECONDITION);
    // Enabling needs a restore first.
    const enable = await rejection(
      client.updateCryptoKeyVersion({ cryptoKeyVersion: { name: v1, state: 'ENABLED' }, updateMask: { paths: ['state'] } }),
    );
    expect(enable.code).toBe(status.FAILED_PRECONDITION);
    expect((await rejection(client.destroyCryptoKeyVersion({ name: v1 }))).code).toBe(status.FAILED_PRECONDITION);

    const [restored] = await client.restoreCryptoKeyVersion({ name: v1 });
    expect(restored.state).toBe('DISABLED');
    expect(restored.destroyTime).toBeNull();
    await client.updateCryptoKeyVersion({ cryptoKeyVersion: { name: v1, state: 'ENABLED' }, updateMask: { paths: ['state'] } });
    const [dec] = await client.decrypt({ name, ciphertext: enc.ciphertext });
    expect(Buffer.from(dec.plaintext as Uint8Array).toString()).toBe('secret');
  });

  it('creates a key without versions when asked; it cannot encrypt until it has a primary', async () => {
    const parent = `projects/kmsgw-test/locations/global/keyRings/${ring}`;
    const [key] = await client.createCryptoKey({
      parent,
      cryptoKeyId: 'empty',
      cryptoKey: { purpose: 'ENCRYPT_DECRYPT' },
      skipInitialVersionCreation: true,
    });
    expect(key.primary).toBeNull();
    const e = await rejection(client.encrypt({ name: key.name!, plaintext: Buffer.from('x') }));
    expect(e.code).toBe(status.FAILED_PRECONDITION);
    await client.createCryptoKeyVersion({ parent: key.name!, cryptoKeyVersion: {} });
    await client.updateCryptoKeyPrimaryVersion({ name: key.name!, cryptoKeyVersionId: '1' });
    const [enc] = await client.encrypt({ name: key.name!, plaintext: Buffer.from('x') });
    expect(enc.name).toBe(`${key.name}/cryptoKeyVersions/1`);
  });
});

describe('Cloud KMS emulator (own instance)', () => {
  let emu: GcpKmsEmulator;
  let client: KeyManagementServiceClient;

  beforeAll(async () => {
    emu = await startGcpKmsEmulator();
    client = adminClient(emu.endpoint);
  });
  afterAll(async () => {
    await client?.close();
    await emu?.dispose();
  });

  it('keeps its keys across stop and start (state file)', async () => {
    const name = await createKey(client, { keyRing: 'persist', key: 'k' });
    await client.createCryptoKeyVersion({ parent: name, cryptoKeyVersion: {} });
    await client.updateCryptoKeyPrimaryVersion({ name, cryptoKeyVersionId: '2' });
    await client.updateCryptoKeyVersion({
      cryptoKeyVersion: { name: `${name}/cryptoKeyVersions/1`, state: 'DISABLED' },
      updateMask: { paths: ['state'] },
    });
    const [enc] = await client.encrypt({ name, plaintext: Buffer.from('survives') });

    const saved = JSON.parse(readFileSync(emu.stateFile, 'utf8')) as { cryptoKeys: Record<string, { primary: string }> };
    expect(saved.cryptoKeys[name]?.primary).toBe('2');

    const port = emu.endpoint.port;
    await emu.stop();
    expect(emu.running).toBe(false);
    await emu.start();
    expect(emu.endpoint.port).toBe(port);

    const [dec] = await client.decrypt({ name, ciphertext: enc.ciphertext });
    expect(Buffer.from(dec.plaintext as Uint8Array).toString()).toBe('survives');
    const [key] = await client.getCryptoKey({ name });
    expect(key.primary?.name).toBe(`${name}/cryptoKeyVersions/2`);
    const [v1] = await client.getCryptoKeyVersion({ name: `${name}/cryptoKeyVersions/1` });
    expect(v1.state).toBe('DISABLED');
  });

  it('injects PERMISSION_DENIED, RESOURCE_EXHAUSTED and UNAVAILABLE per key from the faults file', async () => {
    const a = await createKey(client, { keyRing: 'faults', key: 'a' });
    const b = await createKey(client, { keyRing: 'faults', key: 'b' });
    const [encA] = await client.encrypt({ name: a, plaintext: Buffer.from('a') });
    try {
      emu.setFaults({ PERMISSION_DENIED: [a], RESOURCE_EXHAUSTED: [b] });
      const pd = await rejection(client.decrypt({ name: a, ciphertext: encA.ciphertext }));
      expect(pd.code).toBe(status.PERMISSION_DENIED);
      expect(pd.details).toBe(`Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied on resource '${a}' (or it may not exist).`);
      // A key's versions are covered by the key's entry.
      const pdv = await rejection(client.encrypt({ name: `${a}/cryptoKeyVersions/1`, plaintext: Buffer.from('x') }));
      expect(pdv.code).toBe(status.PERMISSION_DENIED);
      const re = await rejection(client.encrypt({ name: b, plaintext: Buffer.from('x') }));
      expect(re.code).toBe(status.RESOURCE_EXHAUSTED);

      // `times`: only the first N matching calls fail. gax retries UNAVAILABLE by itself...
      emu.setFaults({ UNAVAILABLE: [{ name: a, times: 2 }] });
      const [dec] = await client.decrypt({ name: a, ciphertext: encA.ciphertext });
      expect(Buffer.from(dec.plaintext as Uint8Array).toString()).toBe('a');
      // ...unless retries are off; rewriting the same faults resets the counters.
      emu.setFaults({ UNAVAILABLE: [{ name: a, times: 1 }] });
      const un = await rejection(client.decrypt({ name: a, ciphertext: encA.ciphertext }, NO_RETRY));
      expect(un.code).toBe(status.UNAVAILABLE);
      await client.decrypt({ name: a, ciphertext: encA.ciphertext }, NO_RETRY);

      emu.setFaults(null);
      await client.decrypt({ name: a, ciphertext: encA.ciphertext });
      await client.encrypt({ name: b, plaintext: Buffer.from('x') });
    } finally {
      emu.setFaults(null);
    }
  });

  it('sends a google.rpc.RetryInfo in the status details when a fault names retryDelayMs', async () => {
    const a = await createKey(client, { keyRing: 'retryinfo', key: 'a' });
    try {
      emu.setFaults({ RESOURCE_EXHAUSTED: [{ name: a, retryDelayMs: 2500 }] });
      const re = (await rejection(client.encrypt({ name: a, plaintext: Buffer.from('x') }, NO_RETRY))) as Awaited<
        ReturnType<typeof rejection>
      > & {
        statusDetails?: Array<{ retryDelay?: { seconds?: unknown; nanos?: unknown } }>;
      };
      expect(re.code).toBe(status.RESOURCE_EXHAUSTED);
      const delay = re.statusDetails?.[0]?.retryDelay;
      expect([String(delay?.seconds), delay?.nanos]).toEqual(['2', 500_000_000]);
      emu.setFaults({ RESOURCE_EXHAUSTED: [a] });
      const plain = (await rejection(client.encrypt({ name: a, plaintext: Buffer.from('x') }, NO_RETRY))) as { statusDetails?: unknown };
      expect(plain.statusDetails).toBeUndefined();
    } finally {
      emu.setFaults(null);
    }
  });

  it('delays calls from the faults file (client deadlines expire)', async () => {
    const a = await createKey(client, { keyRing: 'delay', key: 'a' });
    const b = await createKey(client, { keyRing: 'delay', key: 'b' });
    try {
      emu.setFaults({ DELAY_MS: 1500, DELAY_KEYS: [a] });
      const t0 = performance.now();
      const late = await rejection(client.encrypt({ name: a, plaintext: Buffer.from('x') }, { timeout: 300, ...NO_RETRY }));
      expect(late.code).toBe(status.DEADLINE_EXCEEDED);
      expect(performance.now() - t0).toBeLessThan(1400);
      const t1 = performance.now();
      await client.encrypt({ name: b, plaintext: Buffer.from('x') }, { timeout: 300, ...NO_RETRY });
      expect(performance.now() - t1).toBeLessThan(300);
      const t2 = performance.now();
      await client.encrypt({ name: a, plaintext: Buffer.from('x') });
      expect(performance.now() - t2).toBeGreaterThanOrEqual(1400);
    } finally {
      emu.setFaults(null);
    }
  });
});
