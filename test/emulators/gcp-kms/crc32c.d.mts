/** CRC32C (Castagnoli) of `data` (strings as UTF-8) as an unsigned 32-bit integer. */
export declare function crc32c(data: Uint8Array | string): number;
