/**
 * Kafka's murmur2 and the partition its Java producer picks for a key (Utils.murmur2,
 * Utils.toPositive, BuiltInPartitioner), written from the Java source: test/unit/murmur2.test.ts
 * checks it on the Java test suite's own vectors, and test/integration/kafka-port.test.ts checks
 * both clients' keyed records against it. A gateway uses it to put a usage batch (events of many
 * tenants) on the partition each of those tenants' keyed records would go to.
 */
export function murmur2(data: Uint8Array): number {
  const m = 0x5bd1e995;
  const length = data.length;
  let h = 0x9747b28c ^ length;
  const whole = length & ~3;
  for (let i = 0; i < whole; i += 4) {
    let k = data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m) ^ k;
  }
  const rest = length & 3;
  if (rest === 3) h ^= data[whole + 2]! << 16;
  if (rest >= 2) h ^= data[whole + 1]! << 8;
  if (rest >= 1) h = Math.imul(h ^ data[whole]!, m);
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}

/** The partition of a keyed record, as Java's producer picks it. */
export const javaPartition = (key: string | Uint8Array, partitions: number): number =>
  (murmur2(typeof key === 'string' ? Buffer.from(key) : key) & 0x7fffffff) % partitions;
