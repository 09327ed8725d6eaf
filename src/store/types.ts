/**
 * What the aggregator hands the store and gets back. Offsets are Kafka offsets of the usage topic as
 * numbers (safe integers); a fence of `null` means no offset of that partition was ever applied.
 */
import type { BucketCount } from './fields.ts';

export type { BucketCount } from './fields.ts';

/** Add `delta` to bucket `bucketIndex` (= floor(eventTime / bucketMs)) of the counter. */
export interface BucketIncrement {
  readonly bucketMs: number;
  readonly bucketIndex: number;
  readonly delta: number;
}

/** Drops a counter's old buckets, only once the hash has grown past `whenMoreThan` fields. */
export interface PruneRule {
  /**
   * HLEN threshold: below it nothing is scanned, which keeps the common write O(changes). Set it a
   * little above what the counter's windows keep (buckets per window + 1 per bucket size, + meta).
   */
  readonly whenMoreThan: number;
  /** Per bucket size, the lowest bucket index still needed; lower ones are deleted. */
  readonly keepFrom: readonly { readonly bucketMs: number; readonly bucketIndex: number }[];
}

export interface CounterWrite {
  /** The counter key (`{tenant}:rule=...`); it must belong to the write's tenant. */
  readonly counterKey: string;
  readonly increments: readonly BucketIncrement[];
  /** Meta fields to set (names start with `_`, e.g. `_dec`, `_br:60000`); the value `''` deletes the field. */
  readonly meta?: Readonly<Record<string, string>>;
  readonly prune?: PruneRule;
}

/** One tenant's share of a batch: applied whole, or not at all. */
export interface TenantWrite {
  readonly tenantKey: string;
  /** The fence the caller believes is stored for the partition (what `load` returned, or its own last write); null = none. */
  readonly expectedFence: number | null;
  /** The highest usage offset of this tenant's events in the write; must be above expectedFence. */
  readonly newFence: number;
  /**
   * PEXPIRE (re)set on the fence and on every counter written. At least the longest window, and
   * never shrinking between writes: then the fence, touched by every write, outlives every counter
   * of its tenant, and a tenant whose fence expired has no counters left to double-count into.
   */
  readonly ttlMs: number;
  readonly counters: readonly CounterWrite[];
}

export type TenantApplyResult =
  /** Everything was written; the stored fence is now `fence` (= newFence). */
  | { readonly tenantKey: string; readonly status: 'applied'; readonly fence: number }
  /** The stored fence already covers newFence (a redelivered batch): nothing changed. */
  | { readonly tenantKey: string; readonly status: 'already-applied'; readonly fence: number }
  /**
   * The stored fence is not expectedFence (another aggregator wrote, or this one's view is stale):
   * nothing changed. Reload the tenant and redo the events above `fence`.
   */
  | { readonly tenantKey: string; readonly status: 'conflict'; readonly fence: number | null };

export interface LoadRequest {
  readonly tenantKey: string;
  readonly counterKeys: readonly string[];
}

export interface LoadedCounter {
  readonly counterKey: string;
  /** Every bucket field of the hash, in no particular order. */
  readonly buckets: BucketCount[];
  /** Every meta field (name → value). */
  readonly meta: Record<string, string>;
}

export interface LoadedTenant {
  readonly tenantKey: string;
  /** The highest usage offset applied for the partition, or null if none. */
  readonly fence: number | null;
  /** In the order asked; a counter with no hash comes back with no buckets and no meta. */
  readonly counters: LoadedCounter[];
}

/**
 * What the aggregator and replay need of durable storage; RedisStore is it. Counts are fenced by
 * Kafka offsets: a write carries the fence its writer believes is stored for the tenant and the one
 * it reaches, and is applied only when the stored fence is the expected one.
 */
export interface UsageStore {
  /** Fences and counters of these tenants on this partition, in one round trip; results in the order asked. */
  load(partition: number, tenants: readonly LoadRequest[]): Promise<LoadedTenant[]>;
  /** Every tenant's write in one round trip; each is applied whole or not at all; results in order. */
  apply(partition: number, writes: readonly TenantWrite[]): Promise<TenantApplyResult[]>;
}

/** Called after every round trip with its duration and how many Redis commands it carried. */
export type RoundTripHook = (ms: number, ops: number, kind: 'apply' | 'load') => void;
