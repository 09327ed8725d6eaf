import { test } from 'node:test';
import assert from 'node:assert/strict';
import { javaPartition, murmur2 } from '../../src/kafka/partition.ts';

test("murmur2 gives the values of Kafka's own test (UtilsTest.testMurmur2)", () => {
  const cases: Array<[string, number]> = [
    ['21', -973932308],
    ['foobar', -790332482],
    ['a-little-bit-long-string', -985981536],
    ['a-little-bit-longer-string', -1486304829],
    ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
    ['abc', 479470107],
  ];
  for (const [key, want] of cases) assert.equal(murmur2(Buffer.from(key)), want, key);
});

test('the partition is the positive hash modulo the partitions, never the unsigned one', () => {
  // murmur2("21") is negative: unsigned it would be 3321034988 % 6 = 2; Java masks the sign bit.
  assert.equal(javaPartition('21', 6), (-973932308 & 0x7fffffff) % 6);
  assert.notEqual(javaPartition('21', 6), (-973932308 >>> 0) % 6);
});
