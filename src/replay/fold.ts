/**
 * The aggregator's fold (src/fold) without Kafka or Redis: usage records, partition by partition in
 * offset order, through the same functions the live aggregator calls, so a replay of the same events
 * gives the same counts, fences, blocks and breach records (DESIGN §3).
 *
 * What differs from the live aggregator, on purpose:
 *  - nothing is loaded: the fold starts from empty counters (a rebuild writes into an empty Redis);
 *  - the lapse timer runs on event time: before a partition's event at `t`, every block of that
 *    partition whose `until` is at or before `t` lapses, dated `until`, as the live timer dates it;
 *    `finish(at)` lapses what is left up to `at`;
 *  - nothing is published: breach records are collected when asked (a dry run compares them), and
 *    decisions only counted;
 *  - records the aggregator would send to the DLQ are counted, not sent again.
 */
import type { CompiledPolicy, OverrideLookup } from '../policy/index.ts';
import { DEFAULT_FUTURE_SKEW_MS, type BreachRecord } from '../events/index.ts';
import type { CounterState, DecisionContext, Effects } from '../fold/counter-state.ts';
import type { BucketIncrement, CounterWrite } from '../store/types.ts';
import { decodeItems, foldItems, lapseBlocks, newPartition, type FoldRecord, type PartitionState, type TenantState } from '../fold/fold.ts';

export interface FoldOptions {
  policy: CompiledPolicy;
  ctx: DecisionContext;
  /** Events older than this behind a partition's newest are late (as for the aggregator). */
  longestWindowMs: number;
  /** Runtime overrides (quota.overrides as it is now). */
  overrides?: OverrideLookup;
  /** Keep every breach record the fold produces (for a dry run); default false. */
  collectBreaches?: boolean;
  /** The clock the future-skew check of decoding uses; default Date.now(). */
  now?: number;
  futureSkewMs?: number;
}

export interface FoldStats {
  /** Records read. */
  records: number;
  /** Usage events in them (a usage batch record holds many). */
  events: number;
  counted: number;
  refused: number;
  late: number;
  unlimited: number;
  /** Records, or events of batch records, the aggregator sends to the DLQ (malformed, unresolved, from the future). */
  invalid: number;
  blocks: number;
  unblocks: number;
}

/** A tenant after the fold: its fence is the offset of its last counted or refused event (the aggregator's fence). */
export type FoldTenant = TenantState;
export type FoldPartition = PartitionState;

/**
 * A fold's end state as plain data (it crosses from a worker thread by structured clone): per
 * partition, each tenant's fence and, per counter, the `until` of the block it holds and, when asked
 * (a rebuild), the write that puts it into an empty store.
 */
export interface FoldedPartition {
  partition: number;
  tenants: FoldedTenant[];
}
export interface FoldedTenant {
  tenantKey: string;
  fence: number;
  counters: FoldedCounter[];
}
export interface FoldedCounter {
  counterKey: string;
  /** Only in a summary made with `writes`. */
  write?: CounterWrite;
  /** The block the counter holds at the end: when its window has room again (null: none). */
  blockedUntil: number | null;
}

/** What a whole fold produced, in one thread or summed over several. */
export interface FoldSummary {
  stats: FoldStats;
  /** Counters held, over every partition. */
  counters: number;
  /** Breach records (only with collectBreaches): in production order within a partition. */
  breaches: BreachRecord[];
  partitions: FoldedPartition[];
}

export const emptyStats = (): FoldStats => ({ records: 0, events: 0, counted: 0, refused: 0, late: 0, unlimited: 0, invalid: 0, blocks: 0, unblocks: 0 });

export class ReplayFold {
  readonly partitions = new Map<number, FoldPartition>();
  readonly stats: FoldStats = emptyStats();
  /** Breach records in the order they were produced (only with collectBreaches). */
  readonly breaches: BreachRecord[] = [];
  private readonly effects: Effects = { decisions: [], breaches: [] };
  private readonly now: number;

  constructor(private readonly opts: FoldOptions) {
    this.now = opts.now ?? Date.now();
  }

  /** One quota.usage record, in offset order within its partition. */
  add(partition: number, offset: number, value: Buffer | null): void {
    this.addBatch(partition, [{ offset, value }]);
  }

  /** A partition's records, in offset order: the aggregator's fold, with blocks lapsing on event time. */
  addBatch(partition: number, records: readonly FoldRecord[]): void {
    this.stats.records += records.length;
    const part = this.partition(partition);
    const decoded = decodeItems(part, records, {
      policy: this.opts.policy,
      overrides: this.opts.overrides,
      longestWindowMs: this.opts.longestWindowMs,
      now: this.now,
      futureSkewMs: this.opts.futureSkewMs ?? DEFAULT_FUTURE_SKEW_MS,
    });
    this.stats.events += decoded.events;
    this.stats.invalid += decoded.rejected.length;
    this.stats.late += decoded.late;
    this.stats.unlimited += decoded.unlimited;
    const folded = foldItems(part, decoded.items, this.effects, { ctx: this.opts.ctx, lapseOnEventTime: true });
    // Nothing to write to: what the fold reached is the fence at once.
    for (const t of folded.touched.values()) t.tenant.fence = t.newFence;
    this.stats.counted += folded.counted;
    this.stats.refused += folded.refused;
    this.drain();
  }

  /** Lapses every block whose `until` is at or before `at` (the end of the replayed range). */
  finish(at: number): void {
    for (const part of this.partitions.values()) lapseBlocks(part, at, this.opts.ctx, this.effects);
    this.drain();
  }

  /** Counters held, over every partition. */
  get counters(): number {
    let n = 0;
    for (const part of this.partitions.values()) for (const t of part.tenants.values()) n += t.counters.size;
    return n;
  }

  /**
   * The end state as plain data; with `writes`, each counter's store write too (call that once,
   * after `finish`: it takes each counter's changed meta fields).
   */
  summary(opts: { writes: boolean }): FoldSummary {
    const partitions: FoldedPartition[] = [];
    for (const [partition, part] of this.partitions) {
      const tenants: FoldedTenant[] = [];
      for (const [tenantKey, t] of part.tenants) {
        const counters: FoldedCounter[] = [];
        for (const cs of t.counters.values()) {
          const blockedUntil = cs.block?.until ?? null;
          counters.push(opts.writes ? { counterKey: cs.counterKey, blockedUntil, write: counterWrite(cs) } : { counterKey: cs.counterKey, blockedUntil });
        }
        // A tenant is held only once an event of it is folded, which sets its fence.
        tenants.push({ tenantKey, fence: t.fence!, counters });
      }
      partitions.push({ partition, tenants });
    }
    return { stats: { ...this.stats }, counters: this.counters, breaches: this.breaches, partitions };
  }

  private partition(p: number): FoldPartition {
    let s = this.partitions.get(p);
    if (!s) this.partitions.set(p, (s = newPartition()));
    return s;
  }

  private drain(): void {
    const { decisions, breaches } = this.effects;
    for (const d of decisions) {
      if (d.state === 'block') this.stats.blocks++;
      else if (d.state === 'unblock') this.stats.unblocks++;
    }
    if (this.opts.collectBreaches) this.breaches.push(...breaches);
    decisions.length = 0;
    breaches.length = 0;
  }
}

/** The write that puts a folded counter into an empty store: every bucket it holds, and its meta fields. */
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
