/**
 * What the aggregator needs from durable storage. src/store implements it on Redis; the aggregator
 * never sees a Redis client. Counts are fenced by Kafka offsets: a write carries the offset the
 * aggregator believes is stored for the tenant (`expectedFence`) and the one it has reached
 * (`newFence`); the store applies it only when the stored fence is the expected one.
 */
export interface BucketValue {
  bucketMs: number;
  bucketIndex: number;
  count: number;
}

export interface LoadedCounter {
  buckets: BucketValue[];
  /** Meta fields (last published block, open breaches) as stored. */
  meta: Map<string, string>;
}

export interface LoadedTenant {
  /** The highest offset of this tenant's events already applied on the partition; -1 for none. */
  fence: number;
  counters: Map<string, LoadedCounter>;
}

export interface CounterWrite {
  counterKey: string;
  /** Bucket increments: bucket size, bucket index, delta. */
  increments: BucketValue[];
  /** Meta fields to set; "" deletes. */
  meta: Array<[field: string, value: string]>;
  /** Per bucket size, the lowest bucket index still needed; older buckets may be deleted. */
  keepFrom: Array<[bucketMs: number, bucketIndex: number]>;
}

export interface TenantWrite {
  tenantKey: string;
  expectedFence: number;
  newFence: number;
  counters: CounterWrite[];
}

export type ApplyStatus = 'applied' | 'already-applied' | 'conflict';

export interface TenantApplyResult {
  tenantKey: string;
  status: ApplyStatus;
  /** The fence stored after the call. */
  storedFence: number;
}

export interface UsageStore {
  /** Fences and counters of these tenants on this partition, in one round trip. */
  load(partition: number, tenants: Array<{ tenantKey: string; counterKeys: string[] }>): Promise<Map<string, LoadedTenant>>;
  /** Every tenant's write in one round trip; each is applied atomically or not at all. */
  apply(partition: number, writes: TenantWrite[], ttlMs: number): Promise<TenantApplyResult[]>;
}
