import { armor, Decrypter, Encrypter } from 'age-encryption';
import { KEY_BYTES, copySecret, zeroize } from '../crypto/secret.js';
import { AgeRecipientSchema, type Recovery } from '../keystore/types.js';
import { GatewayError } from '../protocol/errors.js';

/**
 * The offline recovery copy of a DEK (break glass): the raw 32-byte DEK sealed to one or more
 * age X25519 recipients as a standard armored age file, so `age -d -i identity` opens it
 * without kmsgw. Only public recipients reach the gateway; identities are used by
 * `kmsgw recover` alone.
 *
 * age-encryption keeps short-lived copies of the file key and the plaintext in its own
 * buffers that cannot be reached from here; every buffer this module sees is zeroized.
 */

/**
 * Seals `dek` (32 bytes, not modified) to every recipient (`age1…`). Throws `BAD_REQUEST`
 * naming the position of a recipient that is not an age X25519 recipient.
 */
export async function sealForRecovery(dek: Buffer, recipients: readonly string[]): Promise<Recovery> {
  if (dek.length !== KEY_BYTES) throw new GatewayError('INTERNAL', `a DEK to seal must be ${KEY_BYTES} bytes`);
  if (recipients.length === 0) throw new GatewayError('BAD_REQUEST', 'no recovery recipient to seal to');
  const encrypter = new Encrypter();
  recipients.forEach((recipient, i) => {
    // The schema is stricter than the library (X25519 only): Debian's age 1.1 opens nothing else.
    if (!AgeRecipientSchema.safeParse(recipient).success) {
      throw new GatewayError('BAD_REQUEST', `recovery recipient ${i + 1} is not an age X25519 recipient (age1…)`);
    }
    encrypter.addRecipient(recipient);
  });
  // A copy lent to the library, so the caller's DEK is never aliased by its streams.
  const lent = copySecret(dek);
  try {
    const file = await encrypter.encrypt(lent);
    return { recipients: [...recipients], sealed: armor.encode(file) };
  } finally {
    zeroize(lent);
  }
}

/**
 * Opens a recovery copy with any of `identities` (`AGE-SECRET-KEY-1…` lines). Returns the DEK
 * in a fresh `Buffer.alloc` buffer the caller zeroizes. Throws `DECRYPT_FAILED` when no
 * identity matches, the file is damaged, or it does not hold exactly 32 bytes; `BAD_REQUEST`
 * when an identity is malformed. Messages never quote an identity or the plaintext.
 */
export async function openRecovery(sealed: string, identities: readonly string[]): Promise<Buffer> {
  const decrypter = recoveryDecrypter(identities);
  let file: Uint8Array;
  try {
    file = armor.decode(sealed);
  } catch (err) {
    throw new GatewayError('DECRYPT_FAILED', 'the recovery copy is not an armored age file', { cause: err });
  }
  let plain: Uint8Array | undefined;
  try {
    try {
      plain = await decrypter.decrypt(file);
    } catch (err) {
      const unmatched = err instanceof Error && err.message.startsWith('no identity matched');
      throw new GatewayError(
        'DECRYPT_FAILED',
        unmatched ? 'the recovery copy is not sealed to any of the given identities' : 'the recovery copy is damaged (age refused it)',
        { cause: err },
      );
    }
    if (plain.length !== KEY_BYTES) {
      throw new GatewayError('DECRYPT_FAILED', `the recovery copy holds ${plain.length} bytes, not a ${KEY_BYTES}-byte DEK`);
    }
    return copySecret(plain);
  } finally {
    zeroize(plain);
  }
}

/**
 * The identities of an age identity file (what `age-keygen` writes): every line that is not
 * blank or a `#` comment. Throws `BAD_REQUEST` when there is none or one is malformed.
 */
export function parseIdentityFile(text: string): string[] {
  const identities = text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  if (identities.length === 0) throw new GatewayError('BAD_REQUEST', 'the identity file holds no age identity (AGE-SECRET-KEY-1…)');
  recoveryDecrypter(identities); // checks each one now, not at the first record
  return identities;
}

/** A decrypter holding every identity; a malformed one is named by its position only. */
function recoveryDecrypter(identities: readonly string[]): Decrypter {
  if (identities.length === 0) throw new GatewayError('BAD_REQUEST', 'no age identity given');
  const decrypter = new Decrypter();
  identities.forEach((identity, i) => {
    try {
      decrypter.addIdentity(identity);
    } catch {
      // No cause attached: a Bech32 error can quote the identity's text.
      throw new GatewayError('BAD_REQUEST', `identity ${i + 1} is not an age identity (AGE-SECRET-KEY-1…)`);
    }
  });
  return decrypter;
}
