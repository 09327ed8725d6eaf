/** The Redis chores of a benchmark: what version it is, what it is using, and removing what a run wrote. */
import type { RedisClient } from '../../../src/store/index.ts';
import { sleep } from './wait.ts';

export async function redisVersion(redis: RedisClient): Promise<string | undefined> {
  try {
    return /redis_version:(\S+)/.exec(await redis.info('server'))?.[1];
  } catch {
    return undefined;
  }
}

export interface RedisInfo {
  /** Server CPU so far, user + system, seconds. */
  cpuS: number;
  usedMemory: number;
  /** Objects UNLINK has handed to the background thread and not yet freed. */
  lazyfreePending: number;
}

const field = (text: string, name: string) => Number(new RegExp(`^${name}:(\\S+)`, 'm').exec(text)?.[1] ?? NaN);

export async function redisInfo(redis: RedisClient): Promise<RedisInfo> {
  const text = await redis.info();
  return {
    cpuS: field(text, 'used_cpu_user') + field(text, 'used_cpu_sys'),
    usedMemory: field(text, 'used_memory'),
    lazyfreePending: field(text, 'lazyfree_pending_objects'),
  };
}

/** Server CPU so far, user + system, seconds: INFO's cpu section alone, cheap enough to read around a measurement. */
export async function redisCpuS(redis: RedisClient): Promise<number> {
  const text = await redis.info('cpu');
  return field(text, 'used_cpu_user') + field(text, 'used_cpu_sys');
}

/** Removes every key under `prefix` (what a benchmark wrote to a Redis it did not start). */
export async function cleanRedis(redis: RedisClient, prefix: string, count = 1_000): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', count);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
}

/** Removes the keys under `prefix` and waits until Redis has freed them, so the next used_memory is a clean start. */
export async function freeRedis(redis: RedisClient, prefix: string): Promise<void> {
  await cleanRedis(redis, prefix, 10_000);
  const deadline = Date.now() + 60_000;
  while ((await redisInfo(redis)).lazyfreePending > 0 && Date.now() < deadline) await sleep(50);
}
