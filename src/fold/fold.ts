/**
 * The fold: what the aggregator does with a partition's usage events, and replay does with the same
 * events read back (DESIGN §3: "same events, same decisions"). Pure: no Kafka, no Redis, no clock of
 * its own. Three steps, each a function both callers use:
 *
 *  1. `decodeItems`: decode and validate each record, resolve its counter with the policy, drop late
 *     events (behind the partition's watermark by more than the longest window) and unlimited keys;
 *     what cannot be decoded or resolved is returned with its DLQ reason.
 *  2. `foldItems`: in offset order, skipping events at or below their tenant's fence (a redelivery),
 *     count admitted events and charge refused ones to the open breach, into the tenant's
 *     CounterStates, which decide on event time; collect the decisions and breach records (effects)
 *     and, when asked, the bucket increments each tenant's store write needs.
 *  3. `lapseBlocks`: lapse every block whose `until` has passed at a time (the aggregator's timer
 *     gives the wall clock; replay gives event time, before each event and at the end of its range).
 *
 * Where the two differ is the caller's: the aggregator loads the tenants it does not hold from the
 * store between 1 and 2 and moves fences when the store write succeeds; replay starts from nothing
 * and moves them at once.
 */
import { resolve, type CompiledPolicy, type OverrideLookup, type Resolved } from '../policy/index.ts';
import { lateness } from '../windows/index.ts';
import type { UsageEvent } from '../events/index.ts';
import { CounterState, type DecisionContext, type Effects } from './counter-state.ts';
import { decodeUsageRecord, type DlqReason } from '../events/decode.ts';
import { DEFAULT_BUCKETS_PER_WINDOW } from '../windows/index.ts';
import type { BucketIncrement, CounterWrite, PruneRule, TenantWrite } from '../store/types.ts';

export interface TenantState {
  /** The highest offset of the tenant's events already applied on the partition (null: none). */
  fence: number | null;
  counters: Map<string, CounterState>;
}

export interface PartitionState {
  tenants: Map<string, TenantState>;
  /** Highest event time seen on the partition: lateness is judged against it. */
  watermark: number;
  /** Counters holding a block. */
  blocked: Set<CounterState>;
  /** Earliest `until` among `blocked` (a lower bound: Infinity when none); before it nothing can lapse. */
  nextLapse: number;
}

export function newPartition(): PartitionState {
  return { tenants: new Map(), watermark: -Infinity, blocked: new Set(), nextLapse: Infinity };
}

/** One record of a partition, in offset order. */
export interface FoldRecord {
  offset: number;
  value: Buffer | null;
}

/** A decoded, resolved event to fold. */
export interface Item {
  offset: number;
  event: UsageEvent;
  resolved: Resolved;
}

export interface Rejected {
  /** Index of the record in the batch given to decodeItems. */
  index: number;
  reason: DlqReason;
  detail: string;
  /**
   * Set when one event of a usage batch record is rejected (the rest of it is counted): its index in
   * the batch and the single usage event it stands for, which is what the DLQ gets.
   */
  event?: { index: number; value: Buffer } | undefined;
}

export interface Decoded {
  items: Item[];
  /** Records (or events of batch records) for the DLQ, with their reasons. */
  rejected: Rejected[];
  /** Usage events the records held (a batch record holds many), good and bad. */
  events: number;
  /** Requests the decoded events stand for (their summed cost), whatever became of them. */
  requests: number;
  /** Events older than the longest window behind the watermark: dropped. */
  late: number;
  /** Events of unlimited keys: nothing to count. */
  unlimited: number;
}

export interface DecodeItemsOptions {
  policy: CompiledPolicy;
  overrides?: OverrideLookup;
  longestWindowMs: number;
  /** The clock the future-skew check uses. */
  now: number;
  futureSkewMs: number;
}

/** Step 1 for a batch of one partition's records; moves the partition's watermark. */
export function decodeItems(part: PartitionState, records: readonly FoldRecord[], opts: DecodeItemsOptions): Decoded {
  const out: Decoded = { items: [], rejected: [], events: 0, requests: 0, late: 0, unlimited: 0 };
  const decodeOpts = { now: opts.now, futureSkewMs: opts.futureSkewMs };
  for (let index = 0; index < records.length; index++) {
    const record = records[index]!;
    const decoded = decodeUsageRecord(record.value, decodeOpts);
    if (!decoded.ok) {
      out.events++;
      out.rejected.push({ index, reason: decoded.reason, detail: decoded.detail });
      continue;
    }
    out.events += decoded.events.length + decoded.rejected.length;
    for (const r of decoded.rejected) out.rejected.push({ index, reason: r.reason, detail: r.detail, event: { index: r.index, value: r.value } });
    for (let i = 0; i < decoded.events.length; i++) {
      const e = decoded.events[i]!;
      out.requests += e.cost;
      const r = resolve(opts.policy, { api: e.api ?? undefined, method: e.method, path: e.path, subjects: e.subjects }, opts.overrides);
      if (r.kind === 'unresolved') {
        const event = decoded.positions === null ? undefined : { index: decoded.positions[i]!, value: Buffer.from(JSON.stringify(e), 'utf8') };
        out.rejected.push({ index, reason: 'unresolved', detail: r.reason, event });
        continue;
      }
      if (
        lateness(e.eventTime, { watermark: Math.max(part.watermark, e.eventTime), longestWindowMs: opts.longestWindowMs, futureSkewMs: Infinity }) === 'late'
      ) {
        out.late++;
        continue;
      }
      if (e.eventTime > part.watermark) part.watermark = e.eventTime;
      if (r.unlimited) {
        out.unlimited++;
        continue;
      }
      out.items.push({ offset: record.offset, event: e, resolved: r });
    }
  }
  return out;
}

/** What one tenant's store write needs after a fold: the fence it reaches and each counter's bucket increments. */
export interface TenantWrites {
  tenant: TenantState;
  newFence: number;
  /** Per counter touched: its bucket increments (none for a counter only refused on). */
  increments: Map<CounterState, CounterIncrements>;
}

/** A counter's bucket increments in a fold, with the latest one per bucket size at hand (events mostly land in it). */
export interface CounterIncrements {
  list: Array<{ bucketMs: number; bucketIndex: number; delta: number }>;
  /** Per bucket size of the counter (CounterState.bucketSizes order): the increment last added to. */
  last: Array<{ bucketMs: number; bucketIndex: number; delta: number } | undefined>;
}

export interface FoldOptions {
  ctx: DecisionContext;
  /** Lapse blocks on event time before each event (replay); the aggregator lapses on its timer. */
  lapseOnEventTime?: boolean;
  /** Collect bucket increments per tenant (the aggregator's store write); replay writes whole counters. */
  collectIncrements?: boolean;
}

export interface FoldResult {
  /** Tenants whose fence the fold moved, by tenant key. */
  touched: Map<string, TenantWrites>;
  counted: number;
  refused: number;
  /** Events at or below their tenant's fence: already applied (a redelivery). */
  skipped: number;
}

/**
 * Step 2. Tenants and counters not held yet start empty (the aggregator loads them beforehand).
 * Decisions and breach records are appended to `effects`.
 */
export function foldItems(part: PartitionState, items: readonly Item[], effects: Effects, opts: FoldOptions): FoldResult {
  const out: FoldResult = { touched: new Map(), counted: 0, refused: 0, skipped: 0 };
  for (const { offset, event, resolved } of items) {
    let tenant = part.tenants.get(resolved.tenantKey);
    if (!tenant) part.tenants.set(resolved.tenantKey, (tenant = { fence: null, counters: new Map() }));
    if (tenant.fence !== null && offset <= tenant.fence) {
      out.skipped++;
      continue;
    }
    if (opts.lapseOnEventTime && event.eventTime >= part.nextLapse) lapseBlocks(part, event.eventTime, opts.ctx, effects);
    let cs = tenant.counters.get(resolved.counterKey);
    if (!cs)
      tenant.counters.set(
        resolved.counterKey,
        (cs = new CounterState(resolved.counterKey, resolved.tenantKey, resolved.rule, resolved.limits, resolved.scopeKey)),
      );
    let t = out.touched.get(resolved.tenantKey);
    if (!t) out.touched.set(resolved.tenantKey, (t = { tenant, newFence: offset, increments: new Map() }));
    t.newFence = offset;
    if (event.outcome.kind === 'refused') {
      cs.refused(event.outcome.decision.windowMs, event.cost);
      out.refused++;
      if (opts.collectIncrements && !t.increments.has(cs)) t.increments.set(cs, { list: [], last: [] });
      continue;
    }
    const until = cs.block?.until;
    cs.admit(event.eventTime, event.cost, opts.ctx, effects, event.gatewayId);
    out.counted++;
    trackBlock(part, cs, until);
    if (opts.collectIncrements) addIncrements(t, cs, event.eventTime, event.cost);
  }
  return out;
}

/**
 * The fenced store writes a fold's touched tenants need: each counter's increments and changed meta
 * fields, and which old buckets may go (those no window counts at the partition's watermark).
 */
export function storeWrites(touched: ReadonlyMap<string, TenantWrites>, watermark: number, ttlMs: number): TenantWrite[] {
  const writes: TenantWrite[] = [];
  for (const [tenantKey, t] of touched) {
    const counters: CounterWrite[] = [];
    for (const [cs, inc] of t.increments) {
      const increments = inc.list;
      const write: CounterWrite = { counterKey: cs.counterKey, increments, prune: pruneRule(cs, watermark, increments) };
      const meta = cs.takeMetaChanges();
      counters.push(meta.length ? { ...write, meta: Object.fromEntries(meta) } : write);
    }
    writes.push({ tenantKey, expectedFence: t.tenant.fence, newFence: t.newFence, ttlMs, counters });
  }
  return writes;
}

/**
 * Which old buckets a counter's write may drop: per bucket size, those below the lowest index any
 * window still counts at `watermark`; and only once the hash holds about twice what the windows
 * need, so a sweep is rare and removes many fields (amortised O(1) per write). What a window needs
 * is the span from there to the newest bucket written, or the default buckets per window otherwise.
 */
export function pruneRule(cs: CounterState, watermark: number, increments: readonly BucketIncrement[]): PruneRule {
  const from = new Map<number, number>();
  for (const { window } of cs.windows) {
    const first = Math.floor(watermark / window.bucketMs) - window.lengthMs / window.bucketMs;
    from.set(window.bucketMs, Math.min(from.get(window.bucketMs) ?? Infinity, first));
  }
  let needed = 0;
  for (const [bucketMs, first] of from) {
    let newest = -Infinity;
    for (const inc of increments) if (inc.bucketMs === bucketMs && inc.bucketIndex > newest) newest = inc.bucketIndex;
    needed += newest === -Infinity ? DEFAULT_BUCKETS_PER_WINDOW : Math.max(1, newest - first + 1);
  }
  return {
    whenMoreThan: 2 * needed + 8, // + room for meta fields
    keepFrom: [...from].map(([bucketMs, bucketIndex]) => ({ bucketMs, bucketIndex })),
  };
}

/** Keeps `blocked` and `nextLapse` in step with a counter whose block was `before` ahead of a change. */
export function trackBlock(part: PartitionState, cs: CounterState, before: number | undefined): void {
  if (cs.block) {
    part.blocked.add(cs);
    if (cs.block.until !== before) part.nextLapse = Math.min(part.nextLapse, cs.block.until);
  } else if (before !== undefined) part.blocked.delete(cs);
}

function addIncrements(t: TenantWrites, cs: CounterState, eventTime: number, cost: number): void {
  let inc = t.increments.get(cs);
  if (!inc) t.increments.set(cs, (inc = { list: [], last: [] }));
  const sizes = cs.bucketSizes;
  for (let j = 0; j < sizes.length; j++) {
    const bucketMs = sizes[j]!;
    const bucketIndex = Math.floor(eventTime / bucketMs);
    let v = inc.last[j];
    // Out of order (another gateway's event in an older bucket): look among the others.
    if (v?.bucketIndex !== bucketIndex) v = inc.list.find((x) => x.bucketMs === bucketMs && x.bucketIndex === bucketIndex);
    if (v) v.delta += cost;
    else inc.list.push((v = { bucketMs, bucketIndex, delta: cost }));
    inc.last[j] = v;
  }
}

/**
 * Step 3: lapses every block whose `until` is at or before `at` (each unblock dated its `until`, or a
 * re-block if events refilled the window), and returns the counters it lapsed.
 */
export function lapseBlocks(part: PartitionState, at: number, ctx: DecisionContext, effects: Effects): CounterState[] {
  const lapsed: CounterState[] = [];
  let next = Infinity;
  for (const cs of part.blocked) {
    const until = cs.lapsesAt();
    if (until === undefined) part.blocked.delete(cs);
    else if (until <= at) {
      cs.lapse(at, ctx, effects);
      lapsed.push(cs);
      if (!cs.block) part.blocked.delete(cs);
      else next = Math.min(next, cs.block.until);
    } else next = Math.min(next, until);
  }
  part.nextLapse = next;
  return lapsed;
}
