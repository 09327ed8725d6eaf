/**
 * The Kafka port's contract (src/kafka/port.ts), checked against the real broker with the client the
 * run uses (QUOTAFLOW_KAFKA_CLIENT: the suite runs once per client). What the aggregator's
 * effectively-once and the gateways' feeds rest on: keyed order, tombstones and headers; a reader
 * that hands over each record from its start exactly once, in order; a follower that knows when it
 * has caught up; a group consumer whose members share the partitions, commit, and after a member
 * leaves go on from the last commit, in order; and the admin's offsets and groups.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { follow, readToEnd } from '../../src/kafka/follow.ts';
import { ensureTopics } from '../../src/kafka/topics.ts';
import type { IncomingRecord, KafkaPort, PartitionBatch } from '../../src/kafka/port.ts';
import { deferred, testKafka, testKafkaClient, uniqueName } from '../support/integration.ts';
import { waitFor } from '../support/wait.ts';
import { javaPartition } from '../../src/kafka/partition.ts';

async function topicOf(t: TestContext, kafka: KafkaPort, partitions: number, configs: Record<string, string> = {}): Promise<string> {
  const topic = uniqueName('port');
  const admin = kafka.admin();
  await admin.connect();
  await ensureTopics(admin, [{ topic, partitions, replicationFactor: -1, configs }]);
  t.after(async () => {
    await admin.deleteTopics([topic]).catch(() => {});
    await admin.disconnect();
  });
  return topic;
}

/** `n` records over `keys` keys, value = their sequence number. */
async function produce(kafka: KafkaPort, topic: string, n: number, keys: number, from = 0): Promise<void> {
  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  try {
    for (let i = from; i < from + n; i += 500) {
      const count = Math.min(500, from + n - i);
      await producer.send(
        Array.from({ length: count }, (_, j) => ({ topic, key: `k${(i + j) % keys}`, value: String(i + j) })),
        { compression: 'gzip' },
      );
    }
  } finally {
    await producer.disconnect();
  }
}

describe(`the Kafka port with ${testKafkaClient()}`, { concurrency: true }, () => {
  test("a producer keeps each key's order; headers, timestamps and tombstones arrive as sent", { timeout: 60_000 }, async (t) => {
    const kafka = testKafka(t);
    const topic = await topicOf(t, kafka, 3);
    const producer = kafka.producer({ idempotent: true });
    await producer.connect();
    await producer.send([
      { topic, key: 'a', value: 'first', headers: { traceparent: '00-abc-def-01', 'x-bin': Buffer.from([0xff, 0x00]) }, timestamp: 1_700_000_000_000 },
      { topic, key: 'a', value: null },
      { topic, key: Buffer.from('b'), value: Buffer.from([1, 2, 3]) },
    ]);
    await producer.disconnect();
    const seen: IncomingRecord[] = [];
    await readToEnd(kafka, topic, (r) => seen.push(r), { quietMs: 1_000 });
    const a = seen.filter((r) => r.key?.toString() === 'a');
    assert.deepEqual(
      a.map((r) => r.value?.toString() ?? null),
      ['first', null],
      'order of one key; a tombstone is a null value',
    );
    assert.equal(a[0]!.headers.traceparent?.toString(), '00-abc-def-01');
    assert.deepEqual([...a[0]!.headers['x-bin']!], [0xff, 0x00]);
    assert.equal(a[0]!.timestamp, 1_700_000_000_000);
    assert.ok(a[1]!.offset > a[0]!.offset);
    assert.deepEqual([...seen.find((r) => r.key?.toString() === 'b')!.value!], [1, 2, 3]);
  });

  test("a keyed record goes to the partition Java's producer picks for its key, as every client's must", { timeout: 60_000 }, async (t) => {
    const kafka = testKafka(t);
    const topic = await topicOf(t, kafka, 6);
    // Tenant keys as the gateways send them; about half have a negative murmur2.
    const keys = Array.from({ length: 300 }, (_, i) => `api_key=k${i}`);
    const producer = kafka.producer({ idempotent: true });
    await producer.connect();
    await producer.send(keys.map((key) => ({ topic, key, value: key })));
    await producer.disconnect();
    const landed = new Map<string, number>();
    const all = deferred(`${keys.length} records`, 30_000);
    const reader = kafka.read(topic, new Map([0, 1, 2, 3, 4, 5].map((p) => [p, 0])), (partition, records) => {
      for (const r of records) landed.set(r.key!.toString(), partition);
      if (landed.size >= keys.length) all.resolve();
    });
    t.after(() => reader.stop());
    await all.promise;
    await reader.stop();
    const elsewhere = keys.filter((k) => landed.get(k) !== javaPartition(k, 6));
    assert.deepEqual(elsewhere, [], 'keys on another partition than the Java client would pick');
  });

  test('a reader hands over every record from each start, once and in order, and nothing of partitions not named', { timeout: 60_000 }, async (t) => {
    const kafka = testKafka(t);
    const topic = await topicOf(t, kafka, 3);
    await produce(kafka, topic, 3_000, 30);
    const admin = kafka.admin();
    await admin.connect();
    const ends = await admin.offsets(topic);
    await admin.disconnect();
    const starts = new Map([
      [0, 100],
      [2, 0],
    ]);
    const want = ends[0]!.high - 100 + ends[2]!.high;
    const got = new Map<number, number[]>();
    const all = deferred(`${want} records`, 30_000);
    let n = 0;
    const reader = kafka.read(topic, starts, (partition, records) => {
      const offsets = got.get(partition) ?? [];
      offsets.push(...records.map((r) => r.offset));
      got.set(partition, offsets);
      n += records.length;
      if (n >= want) all.resolve();
    });
    t.after(() => reader.stop());
    await reader.started;
    await all.promise;
    await reader.stop();
    assert.deepEqual([...got.keys()].sort(), [0, 2], 'partition 1 was not named');
    assert.deepEqual(
      got.get(0),
      Array.from({ length: ends[0]!.high - 100 }, (_, i) => 100 + i),
    );
    assert.deepEqual(
      got.get(2),
      Array.from({ length: ends[2]!.high }, (_, i) => i),
    );
  });

  test('a follower catches up with what the topic held at its start, then goes on with what comes after', { timeout: 60_000 }, async (t) => {
    const kafka = testKafka(t);
    const topic = await topicOf(t, kafka, 3, { 'cleanup.policy': 'compact' });
    await produce(kafka, topic, 300, 300);
    const values: string[] = [];
    const follower = await follow(kafka, topic, (r) => values.push(r.value!.toString()), { quietMs: 2_000 });
    await follower.caughtUp;
    assert.equal(follower.isCaughtUp, true);
    assert.equal(new Set(values).size, 300, 'everything there at the start');
    await produce(kafka, topic, 10, 10, 1_000);
    await waitFor('the records after the start', () => values.length >= 310, { timeoutMs: 30_000 });
    await follower.stop();
    assert.deepEqual(values.slice(300).sort(), Array.from({ length: 10 }, (_, i) => String(1_000 + i)).sort());
  });

  test('two group members share the partitions; when one leaves, the other goes on from the last commit, each partition in order', {
    timeout: 120_000,
  }, async (t) => {
    const kafka = testKafka(t);
    const topic = await topicOf(t, kafka, 4);
    const groupId = uniqueName('port-group');
    const total = 4_000;
    await produce(kafka, topic, total, 40);
    const handled = new Map<number, number[]>(); // partition → offsets handed over, in order
    const assignments: Record<string, number[][]> = { a: [], b: [] };
    let committedUpTo = 0;
    const member = (name: string, slow: boolean) => {
      const c = kafka.consumer({ groupId, sessionTimeoutMs: 10_000, heartbeatIntervalMs: 1_000 });
      const started = c.run({
        topic,
        fromBeginning: true,
        partitionsConcurrently: 2,
        onAssigned: (p) => assignments[name]!.push([...p].sort()),
        onBatch: async (batch: PartitionBatch) => {
          const offsets = handled.get(batch.partition) ?? [];
          for (const r of batch.records) {
            // Redelivery after a rebalance starts at the last commit: never a gap, never backwards within a delivery.
            assert.ok(r.offset <= (offsets.at(-1) ?? -1) + 1, `partition ${batch.partition}: offset ${r.offset} after ${offsets.at(-1)} skips records`);
            offsets.push(r.offset);
          }
          handled.set(batch.partition, offsets);
          if (slow) await new Promise((r) => setTimeout(r, 20));
          if (!batch.isActive()) return;
          await batch.commit(batch.records.at(-1)!.offset + 1);
          committedUpTo += batch.records.length;
        },
      });
      return { c, started };
    };
    const a = member('a', true);
    await a.started;
    const b = member('b', true);
    await b.started;
    // Both have owned partitions at some point, and together every one.
    const handledCount = () => [...handled.values()].reduce((n, o) => n + new Set(o).size, 0);
    await waitFor('the second member to handle some records', () => assignments.b!.some((p) => p.length > 0) && handledCount() > 0, { timeoutMs: 30_000 });
    await b.c.stop(); // b leaves: a gets its partitions and goes on from b's commits
    await waitFor('every record handled', () => handledCount() >= total, { timeoutMs: 90_000, everyMs: 100 });
    await a.c.stop();
    assert.ok(
      assignments.b!.some((p) => p.length > 0),
      'the second member was given partitions',
    );
    assert.ok(
      assignments.a!.some((p) => p.length === 4),
      'after it left, the first member owned all four',
    );
    for (const [p, offsets] of handled) assert.equal(new Set(offsets).size, Math.max(...offsets) + 1, `partition ${p}: every offset from 0 handled`);
    assert.ok(committedUpTo >= total);

    const admin = kafka.admin();
    await admin.connect();
    try {
      const committed = await admin.committedOffsets(groupId, topic);
      const ends = await admin.offsets(topic);
      assert.deepEqual(
        committed.map((c) => c.offset),
        ends.map((e) => e.high),
        'the group committed every partition to its end',
      );
      assert.equal(await admin.groupMembers(groupId), 0, 'both left the group');
      await admin.deleteGroups([groupId]);
    } finally {
      await admin.disconnect();
    }
  });

  test('the admin: offsets, offsets at a time, configs and metadata', { timeout: 60_000 }, async (t) => {
    const kafka = testKafka(t);
    const topic = await topicOf(t, kafka, 2, { 'retention.ms': '3600000' });
    const before = Date.now();
    await produce(kafka, topic, 100, 10);
    const admin = kafka.admin();
    await admin.connect();
    try {
      const offsets = await admin.offsets(topic);
      assert.deepEqual(
        offsets.map((o) => o.partition),
        [0, 1],
      );
      assert.equal(
        offsets.reduce((n, o) => n + o.high - o.low, 0),
        100,
      );
      const atStart = await admin.offsetsAt(topic, before - 60_000);
      assert.deepEqual(
        atStart.map((o) => o.offset),
        [0, 0],
        'the first offset at or after a time before everything',
      );
      const atEnd = await admin.offsetsAt(topic, Date.now() + 60_000);
      assert.deepEqual(
        atEnd.map((o) => o.offset),
        offsets.map((o) => o.high),
        'no record after: the end',
      );
      assert.equal((await admin.topicConfigs([topic], ['retention.ms'])).get(topic)?.get('retention.ms'), '3600000');
      const [meta] = await admin.topicMetadata([topic]);
      assert.equal(meta!.partitions.length, 2);
      assert.ok(meta!.partitions.every((p) => p.leader >= 0 && p.replicas.length >= 1));
      assert.ok((await admin.listTopics()).includes(topic));
      assert.ok((await admin.cluster()).brokers >= 1);
      assert.deepEqual(
        (await admin.committedOffsets(uniqueName('nobody'), topic)).map((c) => c.offset),
        [-1, -1],
        'a group that never committed',
      );
    } finally {
      await admin.disconnect();
    }
  });
});
