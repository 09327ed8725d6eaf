/**
 * The services a benchmark runs on: Kafka and Redis (started for the run, or KAFKA_BROKERS /
 * REDIS_URL), a Kafka port through the client library the run measures, and the topics, consumer
 * groups and Redis keys the run creates, each under the run's random prefix and removed at the end
 * when the services are not the run's own.
 */
import { randomBytes } from 'node:crypto';
import type { Progress } from '../../../src/cli/ui.ts';
import type { GatewayKafka } from '../../../src/gateway/gateway.ts';
import { kafkaPort } from '../../../src/kafka/client.ts';
import type { Admin, KafkaClientName, KafkaPort } from '../../../src/kafka/port.ts';
import { ensureTopics, topicNames, topicSpecs } from '../../../src/kafka/topics.ts';
import { logger } from '../../../src/log.ts';
import { resolveStack, type Stack } from '../../../src/stack/index.ts';
import { whenReady } from '../../../src/store/client.ts';
import { createRedisClient, type RedisClient } from '../../../src/store/index.ts';
import { cleanRedis, redisVersion } from './redis.ts';
import type { MeasuredOn } from './report.ts';

/** Partitions of every usage topic a benchmark creates. */
export const USAGE_PARTITIONS = 6;

export class BenchServices implements MeasuredOn {
  private readonly topicsCreated: string[] = [];
  private readonly groups: string[] = [];

  private constructor(
    readonly stack: Stack,
    readonly client: KafkaClientName,
    /** For the benchmark's own admin work, producers and consumers, and the Aggregators it runs. */
    readonly kafka: KafkaPort,
    readonly admin: Admin,
    readonly redis: RedisClient,
    readonly redisVersion: string | undefined,
    readonly runId: string,
  ) {}

  /** Starts (or finds) Kafka and Redis and connects to both, Kafka through `client`. */
  static async start(client: KafkaClientName, ui: Progress): Promise<BenchServices> {
    ui.update('starting Kafka and Redis (or using KAFKA_BROKERS / REDIS_URL)…');
    const stack = await resolveStack({ env: process.env });
    const runId = randomBytes(3).toString('hex');
    const redis = createRedisClient(stack.redisUrl, { log: logger('bench.redis') });
    let admin: Admin | undefined;
    try {
      const kafka = kafkaPort({ brokers: stack.brokers, client, clientId: `quotaflow-bench-${runId}`, minLogLevel: 'error' });
      admin = kafka.admin();
      await admin.connect();
      await whenReady(redis, 10_000, `connect to ${stack.redisUrl}`);
      return new BenchServices(stack, client, kafka, admin, redis, stack.redis.version ?? (await redisVersion(redis)), runId);
    } catch (e) {
      await admin?.disconnect().catch(() => {});
      redis.disconnect();
      await stack.stop();
      throw e;
    }
  }

  /** Every Redis key of the run starts with it. */
  get redisPrefix(): string {
    return `bench-${this.runId}-`;
  }

  /** What a Gateway is given: settings for the same brokers and client library, never a client. */
  get gatewayKafka(): GatewayKafka {
    return { brokers: this.stack.brokers, client: this.client, minLogLevel: 'error' };
  }

  /** Creates quotaflow's topics under a new prefix named after `what`, and returns the prefix. */
  async newTopics(what: string): Promise<string> {
    const prefix = `bench-${this.runId}-${what}.`;
    this.topicsCreated.push(...(await ensureTopics(this.admin, topicSpecs(topicNames(prefix), { usagePartitions: USAGE_PARTITIONS }))));
    return prefix;
  }

  /** A new consumer group id named after `what`. */
  group(what: string): string {
    const id = `bench-${this.runId}-${what}`;
    this.groups.push(id);
    return id;
  }

  /** Removes what the run left in services it did not start, then stops those it started. */
  async stop(): Promise<void> {
    const log = logger('bench');
    if (this.stack.redis.source === 'external')
      await cleanRedis(this.redis, this.redisPrefix).catch((e) => log.warn("removing the benchmark's Redis keys failed", { error: e }));
    this.redis.disconnect();
    if (this.stack.kafka.source === 'external') {
      if (this.topicsCreated.length)
        await this.admin.deleteTopics(this.topicsCreated).catch((e) => log.warn("deleting the benchmark's topics failed", { error: e }));
      if (this.groups.length)
        await this.admin.deleteGroups(this.groups).catch((e) => log.warn("deleting the benchmark's consumer groups failed", { error: e }));
    }
    await this.admin.disconnect().catch(() => {});
    await this.stack.stop();
  }
}
