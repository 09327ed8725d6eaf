/**
 * Redis Cluster hash slots (CRC16-XMODEM of the key's hash tag, mod 16384), so a batch sent to a
 * cluster can be split into one pipeline per node: ioredis refuses a pipeline whose keys live on
 * several nodes.
 */
const TABLE = new Uint16Array(256);
for (let i = 0; i < 256; i++) {
  let crc = i << 8;
  for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
  TABLE[i] = crc & 0xffff;
}

/** The hash slot of `key`: only the text between the first `{` and the next `}` counts, if non-empty. */
export function hashSlot(key: string): number {
  let hashed = key;
  const open = key.indexOf('{');
  if (open !== -1) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) hashed = key.slice(open + 1, close);
  }
  const bytes = Buffer.from(hashed, 'utf8');
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ byte) & 0xff]!;
  return crc & 16383;
}
