/**
 * What integration tests share: the services `npm test` started (or KAFKA_BROKERS / REDIS_URL),
 * random names so tests never see each other's topics, groups or keys, and clients that are closed
 * when the test ends. Tests wait on events (a consumer reaching a count), never on fixed sleeps.
 */
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { Kafka, logLevel, type Admin } from 'kafkajs';
import { isKafkaClientName, kafkaPort } from '../../src/kafka/client.ts';
import type { KafkaClientName, KafkaPort } from '../../src/kafka/port.ts';
import type { GatewayKafka } from '../../src/gateway/gateway.ts';

export interface Services {
  brokers: string[];
  redisUrl: string;
}

export function services(): Services {
  const brokers = process.env.KAFKA_BROKERS?.split(',').filter(Boolean);
  const redisUrl = process.env.REDIS_URL;
  if (!brokers?.length || !redisUrl) {
    // Never skip: a skipped integration test proves nothing. Run them through `npm test`.
    throw new Error('integration tests need KAFKA_BROKERS and REDIS_URL: run them with `npm test` (it starts both), or set the two variables');
  }
  return { brokers, redisUrl };
}

/** `prefix-<8 random hex>`: a topic, group or key prefix no other test uses. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/**
 * The Kafka client the integration run uses: QUOTAFLOW_KAFKA_CLIENT (the test runner sets it for each
 * pass of the suite), else kafkajs.
 */
export function testKafkaClient(): KafkaClientName {
  const name = process.env.QUOTAFLOW_KAFKA_CLIENT || 'kafkajs';
  if (!isKafkaClientName(name)) throw new Error(`QUOTAFLOW_KAFKA_CLIENT=${name} is not a Kafka client quotaflow has`);
  return name;
}

export function testKafka(t: TestContext | undefined, clientId = uniqueName('test')): KafkaPort {
  void t;
  return kafkaPort({ brokers: services().brokers, clientId, client: testKafkaClient(), minLogLevel: 'error' });
}

/**
 * A kafkajs admin of the test's own, outside quotaflow's Kafka port: for tests that check what
 * quotaflow left on the broker with a client it does not use to write it.
 */
export function independentAdmin(): Admin {
  return new Kafka({ brokers: services().brokers, clientId: uniqueName('check'), logLevel: logLevel.NOTHING }).admin();
}

/** What a Gateway is given: the run's brokers and client. */
export function testGatewayKafka(): GatewayKafka {
  return { brokers: services().brokers, client: testKafkaClient() };
}

export function testRedis(t: TestContext): Redis {
  const redis = new Redis(services().redisUrl, { lazyConnect: false, maxRetriesPerRequest: 3 });
  t.after(() =>
    redis.quit().then(
      () => undefined,
      () => redis.disconnect(),
    ),
  );
  return redis;
}

/** Resolves when `predicate` holds after an event, or rejects after `timeoutMs` with `what`. */
export function deferred<T = void>(what: string, timeoutMs: number): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    resolve = (v) => {
      clearTimeout(timer);
      res(v);
    };
    reject = (e) => {
      clearTimeout(timer);
      rej(e);
    };
  });
  return { promise, resolve, reject };
}
