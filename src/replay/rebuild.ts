/**
 * Writes a replay's fold into the store, as the aggregators would have left it: every counter's
 * buckets, its last block and open breaches, and each tenant's fence, through the same fenced write
 * the aggregator uses. The write expects no fence (an empty store after a loss): a tenant already
 * there is left alone and reported, so a rebuild never adds to counts that survived. Running the
 * same rebuild twice is harmless (the second finds its own fences: "already there").
 */
import type { CounterWrite, TenantWrite, UsageStore } from '../store/types.ts';
import type { FoldedCounter, FoldedPartition } from './fold.ts';

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

function writeOf(c: FoldedCounter): CounterWrite {
  if (!c.write) throw new Error(`the fold summary holds no write for ${c.counterKey}: replay with writes: true to rebuild`);
  return c.write;
}

/** Writes a fold's summary (made with `writes: true`) into the store, 500 tenants per round trip. */
export async function writeFold(partitions: readonly FoldedPartition[], store: UsageStore, ttlMs: number, opts: RebuildOptions = {}): Promise<RebuildResult> {
  const chunk = opts.chunk ?? 500;
  const result: RebuildResult = { tenants: 0, counters: 0, blocked: 0, written: 0, present: [], roundTrips: 0, aborted: false };
  for (const part of partitions) result.tenants += part.tenants.length;
  let done = 0;
  for (const { partition, tenants } of partitions) {
    for (let i = 0; i < tenants.length; i += chunk) {
      if (opts.signal?.aborted) {
        result.aborted = true;
        return result;
      }
      const writes: TenantWrite[] = tenants.slice(i, i + chunk).map((t) => {
        result.counters += t.counters.length;
        for (const c of t.counters) if (c.blockedUntil !== null) result.blocked++;
        return { tenantKey: t.tenantKey, expectedFence: null, newFence: t.fence, ttlMs, counters: t.counters.map(writeOf) };
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
