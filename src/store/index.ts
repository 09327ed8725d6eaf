/**
 * The store: the Redis side of the aggregator. Counters live in per-counter hashes of bucket
 * counts, fenced per tenant by Kafka offsets; see redis-store.ts and lua/applyUsage-n.lua.
 * ioredis is imported only under this folder.
 */
export { RedisStore } from './redis-store.ts';
export type { RedisStoreOptions } from './redis-store.ts';
export { StoreKeys } from './keys.ts';
export { createRedisClient, createRedisCluster } from './client.ts';
export type { RedisClient, RedisClientOptions } from './client.ts';
export { commandName, PACKAGE_VERSION } from './scripts.ts';
export { bucketField, parseBucketField } from './fields.ts';
export type {
  BucketCount,
  BucketIncrement,
  CounterWrite,
  LoadedCounter,
  LoadedTenant,
  LoadRequest,
  PruneRule,
  RoundTripHook,
  TenantApplyResult,
  TenantWrite,
  UsageStore,
} from './types.ts';
export { openUsageStore } from './usage-store.ts';
export type { OpenUsageStoreOptions } from './usage-store.ts';
