/**
 * What integration tests share: the services `npm test` started (or KAFKA_BROKERS / REDIS_URL),
 * random names so tests never see each other's topics, groups or keys, and clients that are closed
 * when the test ends. Tests wait on events (a consumer reaching a count), never on fixed sleeps.
 */
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import { Redis } from 'ioredis';
import type { Kafka } from 'kafkajs';
import { createKafka } from '../../src/kafka/client.ts';

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

export function testKafka(t: TestContext | undefined, clientId = uniqueName('test')): Kafka {
  void t;
  return createKafka({ brokers: services().brokers, clientId, minLogLevel: 'error' });
}

export function testRedis(t: TestContext): Redis {
  const redis = new Redis(services().redisUrl, { lazyConnect: false, maxRetriesPerRequest: 3 });
  t.after(() => redis.quit().then(() => undefined, () => redis.disconnect()));
  return redis;
}

/** Resolves when `predicate` holds after an event, or rejects after `timeoutMs` with `what`. */
export function deferred<T = void>(what: string, timeoutMs: number): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    resolve = (v) => { clearTimeout(timer); res(v); };
    reject = (e) => { clearTimeout(timer); rej(e); };
  });
  return { promise, resolve, reject };
}
