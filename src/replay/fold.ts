/**
 * The aggregator's fold without Kafka or Redis: usage records, partition by partition in offset
 * order, into the same CounterState the live aggregator keeps, so a replay of the same events gives
 * the same counts, fences, blocks and breach records (DESIGN §3).
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
import { resolve, type CompiledPolicy, type OverrideLookup } from '../policy/index.ts';
import { lateness } from '../windows/index.ts';
import { DEFAULT_FUTURE_SKEW_MS, type BreachRecord } from '../events/index.ts';
import { CounterState, type DecisionContext, type Effects } from '../aggregator/counter-state.ts';
import { decodeUsageEvent } from '../aggregator/decode.ts';

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
  counted: number;
  refused: number;
  late: number;
  unlimited: number;
  /** Records the aggregator sends to the DLQ (malformed, unresolved, from the future). */
  invalid: number;
  blocks: number;
  unblocks: number;
}

export interface FoldTenant {
  /** Offset of the tenant's last counted or refused event on its partition (the aggregator's fence). */
  fence: number;
  counters: Map<string, CounterState>;
}

export interface FoldPartition {
  tenants: Map<string, FoldTenant>;
  watermark: number;
  blocked: Set<CounterState>;
  /** Earliest `until` in `blocked` (Infinity when none): events before it need not look for lapses. */
  nextLapse: number;
}

export class ReplayFold {
  readonly partitions = new Map<number, FoldPartition>();
  readonly stats: FoldStats = { records: 0, counted: 0, refused: 0, late: 0, unlimited: 0, invalid: 0, blocks: 0, unblocks: 0 };
  /** Breach records in the order they were produced (only with collectBreaches). */
  readonly breaches: BreachRecord[] = [];
  private readonly effects: Effects = { decisions: [], breaches: [] };
  private readonly now: number;

  constructor(private readonly opts: FoldOptions) {
    this.now = opts.now ?? Date.now();
  }

  /** One quota.usage record, in offset order within its partition. */
  add(partition: number, offset: number, value: Buffer | null): void {
    this.stats.records++;
    const decoded = decodeUsageEvent(value, { now: this.now, futureSkewMs: this.opts.futureSkewMs ?? DEFAULT_FUTURE_SKEW_MS });
    if (!decoded.ok) {
      this.stats.invalid++;
      return;
    }
    const e = decoded.event;
    const r = resolve(this.opts.policy, { api: e.api ?? undefined, method: e.method, path: e.path, subjects: e.subjects }, this.opts.overrides);
    if (r.kind === 'unresolved') {
      this.stats.invalid++;
      return;
    }
    const part = this.partition(partition);
    if (lateness(e.eventTime, { watermark: Math.max(part.watermark, e.eventTime), longestWindowMs: this.opts.longestWindowMs, futureSkewMs: Infinity }) === 'late') {
      this.stats.late++;
      return;
    }
    if (e.eventTime > part.watermark) part.watermark = e.eventTime;
    if (r.unlimited) {
      this.stats.unlimited++;
      return;
    }
    if (e.eventTime >= part.nextLapse) this.lapse(part, e.eventTime);

    let tenant = part.tenants.get(r.tenantKey);
    if (!tenant) part.tenants.set(r.tenantKey, (tenant = { fence: -1, counters: new Map() }));
    let cs = tenant.counters.get(r.counterKey);
    if (!cs) tenant.counters.set(r.counterKey, (cs = new CounterState(r.counterKey, r.tenantKey, r.rule, r.limits, r.scopeKey)));
    tenant.fence = offset;
    if (e.outcome.kind === 'refused') {
      cs.refused(e.outcome.decision.windowMs, e.cost);
      this.stats.refused++;
      return;
    }
    const until = cs.block?.until;
    cs.admit(e.eventTime, e.cost, this.opts.ctx, this.effects, e.gatewayId);
    this.stats.counted++;
    if (cs.block) {
      part.blocked.add(cs);
      if (cs.block.until !== until) part.nextLapse = Math.min(part.nextLapse, cs.block.until);
    } else if (until !== undefined) part.blocked.delete(cs);
    this.drain();
  }

  /** Lapses every block whose `until` is at or before `at` (the end of the replayed range). */
  finish(at: number): void {
    for (const part of this.partitions.values()) this.lapse(part, at);
    this.drain();
  }

  /** Counters held, over every partition. */
  get counters(): number {
    let n = 0;
    for (const part of this.partitions.values()) for (const t of part.tenants.values()) n += t.counters.size;
    return n;
  }

  private partition(p: number): FoldPartition {
    let s = this.partitions.get(p);
    if (!s) this.partitions.set(p, (s = { tenants: new Map(), watermark: -Infinity, blocked: new Set(), nextLapse: Infinity }));
    return s;
  }

  /** What the aggregator's lapse timer does, at `now` on this partition. */
  private lapse(part: FoldPartition, now: number): void {
    let next = Infinity;
    for (const cs of part.blocked) {
      const at = cs.lapsesAt();
      if (at === undefined) part.blocked.delete(cs);
      else if (at <= now) {
        cs.lapse(now, this.opts.ctx, this.effects);
        if (!cs.block) part.blocked.delete(cs);
        else next = Math.min(next, cs.block.until);
      } else next = Math.min(next, at);
    }
    part.nextLapse = next;
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
