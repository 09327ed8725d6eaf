/**
 * The aggregator's port (src/aggregator/ports.ts UsageStore) on top of RedisStore: the same calls in
 * the aggregator's shapes (fences as -1 for none, Maps, one TTL per call), plus the prune threshold
 * the port leaves to the store.
 */
import type { LoadedCounter as PortCounter, LoadedTenant as PortTenant, TenantApplyResult as PortResult, TenantWrite as PortWrite, UsageStore } from '../aggregator/ports.ts';
import { DEFAULT_BUCKETS_PER_WINDOW } from '../windows/index.ts';
import { createRedisClient, whenReady, type RedisClient, type RedisClientOptions } from './client.ts';
import { StoreKeys } from './keys.ts';
import { RedisStore, type RedisStoreOptions } from './redis-store.ts';
import type { CounterWrite, PruneRule, TenantWrite } from './types.ts';

export interface OpenUsageStoreOptions extends RedisClientOptions, RedisStoreOptions {
  /** Prefix of every key (default `qf:`). */
  keyPrefix?: string;
}

export interface ClosableUsageStore extends UsageStore {
  readonly store: RedisStore;
  close(): Promise<void>;
}

/**
 * Connects to Redis at `url` and returns the aggregator's store; fails with SERVICE_UNREACHABLE
 * (retriable) when Redis cannot be reached within `timeoutMs` (default 5000).
 */
export async function openUsageStore(url: string, options: OpenUsageStoreOptions = {}): Promise<ClosableUsageStore> {
  const keys = new StoreKeys(options.keyPrefix ?? 'qf:');
  const client = createRedisClient(url, options);
  try {
    await whenReady(client, options.timeoutMs ?? 5_000, `connect to ${url}`);
  } catch (e) {
    client.disconnect();
    throw e;
  }
  return new PortAdapter(client, new RedisStore(client, keys, options));
}

class PortAdapter implements ClosableUsageStore {
  readonly #client: RedisClient;
  readonly store: RedisStore;

  constructor(client: RedisClient, store: RedisStore) {
    this.#client = client;
    this.store = store;
  }

  async load(partition: number, tenants: Array<{ tenantKey: string; counterKeys: string[] }>): Promise<Map<string, PortTenant>> {
    const loaded = await this.store.load(partition, tenants);
    const out = new Map<string, PortTenant>();
    for (const t of loaded) {
      const counters = new Map<string, PortCounter>();
      for (const c of t.counters) counters.set(c.counterKey, { buckets: c.buckets.map((b) => ({ ...b })), meta: new Map(Object.entries(c.meta)) });
      out.set(t.tenantKey, { fence: t.fence ?? -1, counters });
    }
    return out;
  }

  async apply(partition: number, writes: PortWrite[], ttlMs: number): Promise<PortResult[]> {
    const results = await this.store.apply(partition, writes.map((w): TenantWrite => ({
      tenantKey: w.tenantKey,
      expectedFence: w.expectedFence < 0 ? null : w.expectedFence,
      newFence: w.newFence,
      ttlMs,
      counters: w.counters.map((c): CounterWrite => {
        const write: { -readonly [K in keyof CounterWrite]: CounterWrite[K] } = {
          counterKey: c.counterKey,
          increments: c.increments.map((b) => ({ bucketMs: b.bucketMs, bucketIndex: b.bucketIndex, delta: b.count })),
        };
        if (c.meta.length) write.meta = Object.fromEntries(c.meta);
        if (c.keepFrom.length) write.prune = pruneRule(c);
        return write;
      }),
    })));
    return results.map((r) => ({ tenantKey: r.tenantKey, status: r.status, storedFence: r.fence ?? -1 }));
  }

  async close(): Promise<void> {
    await this.#client.quit().then(() => undefined, () => this.#client.disconnect());
  }
}

/**
 * Prune once the hash holds about twice what the counter's windows need, so a sweep is rare and
 * removes many fields (amortised O(1) per write). What a window needs is read from the write: the
 * span from keepFrom to the newest bucket written, or the default buckets per window otherwise.
 */
function pruneRule(c: PortWrite['counters'][number]): PruneRule {
  let needed = 0;
  for (const [bucketMs, from] of c.keepFrom) {
    let newest = -Infinity;
    for (const inc of c.increments) if (inc.bucketMs === bucketMs && inc.bucketIndex > newest) newest = inc.bucketIndex;
    needed += newest === -Infinity ? DEFAULT_BUCKETS_PER_WINDOW : Math.max(1, newest - from + 1);
  }
  return {
    whenMoreThan: 2 * needed + 8, // + room for meta fields
    keepFrom: c.keepFrom.map(([bucketMs, bucketIndex]) => ({ bucketMs, bucketIndex })),
  };
}
