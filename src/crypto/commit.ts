import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Key-commitment tag: HMAC-SHA256 keyed with the DEK over
 * `kmsgw/v1 commit <key-id> <version>`. Stored beside each wrapped DEK and
 * checked after every unwrap, so a blob swapped between ids or versions, or
 * corrupted on disk, is refused whatever the KEK adapter does.
 */
export function commitTag(dek: Buffer, keyId: string, version: number): Buffer {
  return createHmac('sha256', dek).update(`kmsgw/v1 commit ${keyId} ${version}`, 'latin1').digest();
}

/** Constant-time check of a stored commitment tag. */
export function verifyCommitTag(dek: Buffer, keyId: string, version: number, expected: Buffer): boolean {
  const actual = commitTag(dek, keyId, version);
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
