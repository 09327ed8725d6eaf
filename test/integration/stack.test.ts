import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ensureTopics } from '../../src/kafka/topics.ts';
import { deferred, services, testKafka, testRedis, uniqueName } from '../support/integration.ts';
import { pinnedKafkaVersion } from '../../src/stack/kafka-local.ts';

describe('the integration stack is a real Kafka broker and a real Redis', () => {
  test('the broker answers as a Kafka cluster, running the pinned version when the run started it', async () => {
    const admin = testKafka(undefined).admin();
    await admin.connect();
    try {
      const cluster = await admin.cluster();
      assert.ok(cluster.brokers >= 1);
      assert.match(cluster.clusterId, /^[A-Za-z0-9_-]{22}$/, 'a KRaft cluster id');
    } finally {
      await admin.disconnect();
    }
    if (process.env.QUOTAFLOW_TEST_STACK_SOURCE === 'local') {
      assert.equal(process.env.QUOTAFLOW_TEST_KAFKA_VERSION, await pinnedKafkaVersion());
    }
  });

  test('creates a compacted topic and a 6-partition topic; 10,000 keyed messages from an idempotent producer all come back through a consumer group', {
    timeout: 120_000,
  }, async () => {
    const kafka = testKafka(undefined);
    const admin = kafka.admin();
    const compacted = uniqueName('it-compacted');
    const topic = uniqueName('it-usage');
    await admin.connect();
    const producer = kafka.producer({ idempotent: true });
    const consumer = kafka.consumer({ groupId: uniqueName('it-group'), sessionTimeoutMs: 10_000, heartbeatIntervalMs: 1_000 });
    try {
      await ensureTopics(admin, [
        { topic: compacted, partitions: 1, replicationFactor: -1, configs: { 'cleanup.policy': 'compact' } },
        { topic, partitions: 6, replicationFactor: -1, configs: {} },
      ]);
      assert.equal((await admin.topicConfigs([compacted], ['cleanup.policy'])).get(compacted)?.get('cleanup.policy'), 'compact');
      assert.equal((await admin.topicMetadata([topic]))[0]!.partitions.length, 6);

      const total = 10_000;
      const keys = 250;
      await producer.connect();
      for (let start = 0; start < total; start += 1_000) {
        await producer.send(
          Array.from({ length: 1_000 }, (_, i) => ({ topic, key: `tenant-${(start + i) % keys}`, value: String(start + i) })),
          { compression: 'gzip' },
        );
      }

      const seen = new Set<number>();
      const partitionOfKey = new Map<string, number>();
      let duplicates = 0;
      const all = deferred(`${total} messages`, 60_000);
      await consumer.run({
        topic,
        fromBeginning: true,
        partitionsConcurrently: 3,
        onBatch: async (batch) => {
          for (const m of batch.records) {
            const n = Number(m.value!.toString());
            if (seen.has(n)) duplicates++;
            seen.add(n);
            const key = m.key!.toString();
            const p = partitionOfKey.get(key);
            assert.ok(p === undefined || p === batch.partition, `key ${key} on two partitions`);
            partitionOfKey.set(key, batch.partition);
          }
          await batch.commit(batch.records.at(-1)!.offset + 1);
          if (seen.size === total) all.resolve();
        },
      });
      await all.promise;
      assert.equal(seen.size, total);
      assert.equal(duplicates, 0);
      assert.equal(partitionOfKey.size, keys);
      assert.ok(new Set(partitionOfKey.values()).size > 1, 'keys spread over several partitions');
    } finally {
      await consumer.stop();
      await producer.disconnect();
      await admin.deleteTopics([compacted, topic]).catch(() => {});
      await admin.disconnect();
    }
  });

  test('a Lua script round-trips through Redis, registered with defineCommand', async (t) => {
    const redis = testRedis(t);
    const prefix = uniqueName('it');
    redis.defineCommand('qfTestAddAndRead', {
      numberOfKeys: 1,
      lua: `-- KEYS[1] counter, ARGV[1] increment; returns {new value, ttl}
        local v = redis.call('INCRBY', KEYS[1], ARGV[1])
        redis.call('PEXPIRE', KEYS[1], 60000)
        return {v, redis.call('PTTL', KEYS[1])}`,
    });
    const run = (redis as unknown as { qfTestAddAndRead(key: string, by: number): Promise<[number, number]> }).qfTestAddAndRead.bind(redis);
    const key = `${prefix}:{tenant}:count`;
    assert.deepEqual((await run(key, 5))[0], 5);
    const [value, ttl] = await run(key, 7);
    assert.equal(value, 12);
    assert.ok(ttl > 0 && ttl <= 60_000);
    const info = await redis.info('server');
    assert.match(info, /redis_version:\d+/);
    assert.ok(services().redisUrl.startsWith('redis'));
    await redis.del(key);
  });
});
