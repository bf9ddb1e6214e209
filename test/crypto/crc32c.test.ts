import { describe, expect, it } from 'vitest';
import { crc32c } from '../../src/crypto/crc32c.js';

describe('crc32c', () => {
  it.each([
    ['', 0x00000000],
    ['123456789', 0xe3069283],
    ['a', 0xc1d04330],
    ['The quick brown fox jumps over the lazy dog', 0x22620404],
  ])('crc32c(%j) = %i', (text, expected) => {
    expect(crc32c(Buffer.from(text, 'ascii'))).toBe(expected);
  });

  it('matches RFC 3720 B.4 vectors', () => {
    expect(crc32c(Buffer.alloc(32, 0x00))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i)))).toBe(0x113fdb5c);
  });
});
