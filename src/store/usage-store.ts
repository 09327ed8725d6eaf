/** Opening the store on a Redis URL: a client of its own, ready before the store is handed out. */
import { createRedisClient, whenReady, type RedisClientOptions } from './client.ts';
import { StoreKeys } from './keys.ts';
import { RedisStore, type RedisStoreOptions } from './redis-store.ts';

export interface OpenUsageStoreOptions extends RedisClientOptions, RedisStoreOptions {
  /** Prefix of every key (default `qf:`). */
  keyPrefix?: string;
}

/**
 * Connects to Redis at `url` and returns the store (close it with `close()`); fails with
 * SERVICE_UNREACHABLE (retriable) when Redis cannot be reached within `timeoutMs` (default 5000).
 */
export async function openUsageStore(url: string, options: OpenUsageStoreOptions = {}): Promise<RedisStore> {
  const client = createRedisClient(url, options);
  try {
    await whenReady(client, options.timeoutMs ?? 5_000, `connect to ${url}`);
  } catch (e) {
    client.disconnect();
    throw e;
  }
  return new RedisStore(client, new StoreKeys(options.keyPrefix ?? 'qf:'), options);
}
