// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as Cloud KMS uses for its *_crc32c integrity fields.
// Check value: crc32c("123456789") = 0xE3069283.

/** @type {Uint32Array} */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC32C of `data` as an unsigned 32-bit integer.
 * @param {Uint8Array | string} data strings are encoded as UTF-8
 * @returns {number}
 */
export function crc32c(data) {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) {
    crc = /** @type {number} */ (TABLE[(crc ^ /** @type {number} */ (bytes[i])) & 0xff]) ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0;
}
