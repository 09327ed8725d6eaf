import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import kafkajs from 'kafkajs';
import { deferred, services, testKafka, testRedis, uniqueName } from '../support/integration.ts';
import { pinnedKafkaVersion } from '../../src/stack/kafka-local.ts';

const { CompressionTypes, ConfigResourceTypes } = kafkajs; // CommonJS: named ESM imports miss some exports

describe('the integration stack is a real Kafka broker and a real Redis', () => {
  test('the broker answers as a Kafka cluster, running the pinned version when the run started it', async () => {
    const admin = testKafka(undefined).admin();
    await admin.connect();
    try {
      const cluster = await admin.describeCluster();
      assert.ok(cluster.brokers.length >= 1);
      assert.equal(`${cluster.brokers[0]!.host}:${cluster.brokers[0]!.port}`.length > 0, true);
      assert.match(cluster.clusterId, /^[A-Za-z0-9_-]{22}$/, 'a KRaft cluster id');
    } finally {
      await admin.disconnect();
    }
    if (process.env.QUOTAFLOW_TEST_STACK_SOURCE === 'local') {
      assert.equal(process.env.QUOTAFLOW_TEST_KAFKA_VERSION, await pinnedKafkaVersion());
    }
  });

  test('creates a compacted topic and a 6-partition topic; 10,000 keyed messages from an idempotent producer all come back through a consumer group', { timeout: 120_000 }, async () => {
    const kafka = testKafka(undefined);
    const admin = kafka.admin();
    const compacted = uniqueName('it-compacted');
    const topic = uniqueName('it-usage');
    await admin.connect();
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    const consumer = kafka.consumer({ groupId: uniqueName('it-group'), sessionTimeout: 10_000, heartbeatInterval: 1_000 });
    try {
      await admin.createTopics({
        waitForLeaders: true,
        topics: [
          { topic: compacted, numPartitions: 1, configEntries: [{ name: 'cleanup.policy', value: 'compact' }] },
          { topic, numPartitions: 6 },
        ],
      });
      const configs = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: compacted, configNames: ['cleanup.policy'] }] });
      assert.equal(configs.resources[0]!.configEntries.find((c) => c.configName === 'cleanup.policy')?.configValue, 'compact');
      const meta = await admin.fetchTopicMetadata({ topics: [topic] });
      assert.equal(meta.topics[0]!.partitions.length, 6);

      const total = 10_000;
      const keys = 250;
      await producer.connect();
      for (let start = 0; start < total; start += 1_000) {
        await producer.send({
          topic,
          acks: -1,
          compression: CompressionTypes.GZIP,
          messages: Array.from({ length: 1_000 }, (_, i) => ({ key: `tenant-${(start + i) % keys}`, value: String(start + i) })),
        });
      }

      const seen = new Set<number>();
      const partitionOfKey = new Map<string, number>();
      let duplicates = 0;
      const all = deferred(`${total} messages`, 60_000);
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        eachBatch: async ({ batch }) => {
          for (const m of batch.messages) {
            const n = Number(m.value!.toString());
            if (seen.has(n)) duplicates++;
            seen.add(n);
            const key = m.key!.toString();
            const p = partitionOfKey.get(key);
            assert.ok(p === undefined || p === batch.partition, `key ${key} on two partitions`);
            partitionOfKey.set(key, batch.partition);
          }
          if (seen.size === total) all.resolve();
        },
      });
      await all.promise;
      assert.equal(seen.size, total);
      assert.equal(duplicates, 0);
      assert.equal(partitionOfKey.size, keys);
      assert.ok(new Set(partitionOfKey.values()).size > 1, 'keys spread over several partitions');
    } finally {
      await consumer.disconnect();
      await producer.disconnect();
      await admin.deleteTopics({ topics: [compacted, topic] }).catch(() => {});
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
