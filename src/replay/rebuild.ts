/**
 * Writes a replay's fold into the store, as the aggregators would have left it: every counter's
 * buckets, its last block and open breaches, and each tenant's fence, through the same fenced write
 * the aggregator uses. The write expects no fence (an empty store after a loss): a tenant already
 * there is left alone and reported, so a rebuild never adds to counts that survived. Running the
 * same rebuild twice is harmless (the second finds its own fences: "already there").
 */
import type { BucketIncrement, CounterWrite, TenantWrite, UsageStore } from '../store/types.ts';
import type { CounterState } from '../fold/counter-state.ts';
import type { ReplayFold } from './fold.ts';

export interface RebuildResult {
  tenants: number;
  counters: number;
  /** Counters written holding a block (as published before the loss). */
  blocked: number;
  written: number;
  /** Tenants whose fence was already in the store (written since the loss, or by an earlier rebuild). */
  present: string[];
  roundTrips: number;
  aborted: boolean;
}

export interface RebuildOptions {
  /** Tenants per round trip (default 500). */
  chunk?: number;
  signal?: AbortSignal;
  onProgress?: (tenantsDone: number, tenants: number) => void;
}

export function counterWrite(cs: CounterState): CounterWrite {
  const increments: BucketIncrement[] = [];
  const seen = new Set<number>();
  for (const { window } of cs.windows) {
    if (seen.has(window.bucketMs)) continue; // windows of one bucket size share a ring
    seen.add(window.bucketMs);
    for (const [bucketIndex, count] of cs.counter.buckets(window)) increments.push({ bucketMs: window.bucketMs, bucketIndex, delta: count });
  }
  // A deletion ("") is a no-op on an empty store.
  const meta = cs.takeMetaChanges().filter(([, value]) => value !== '');
  return meta.length ? { counterKey: cs.counterKey, increments, meta: Object.fromEntries(meta) } : { counterKey: cs.counterKey, increments };
}

export async function writeFold(fold: ReplayFold, store: UsageStore, ttlMs: number, opts: RebuildOptions = {}): Promise<RebuildResult> {
  const chunk = opts.chunk ?? 500;
  const result: RebuildResult = { tenants: 0, counters: 0, blocked: 0, written: 0, present: [], roundTrips: 0, aborted: false };
  for (const part of fold.partitions.values()) result.tenants += part.tenants.size;
  let done = 0;
  for (const [partition, part] of fold.partitions) {
    const tenants = [...part.tenants];
    for (let i = 0; i < tenants.length; i += chunk) {
      if (opts.signal?.aborted) {
        result.aborted = true;
        return result;
      }
      const writes: TenantWrite[] = tenants.slice(i, i + chunk).map(([tenantKey, t]) => {
        const counters = [...t.counters.values()];
        result.counters += counters.length;
        result.blocked += counters.filter((cs) => cs.block !== null).length;
        return { tenantKey, expectedFence: null, newFence: t.fence!, ttlMs, counters: counters.map(counterWrite) };
      });
      const results = await store.apply(partition, writes);
      result.roundTrips++;
      for (const r of results) {
        if (r.status === 'applied') result.written++;
        else result.present.push(r.tenantKey);
      }
      done += writes.length;
      opts.onProgress?.(done, result.tenants);
    }
  }
  return result;
}
