/**
 * What an aggregator knows about one counter: its rolling buckets (a mirror of the Redis hash), the
 * block it last published, and the breaches still open. Pure: every method takes event time and
 * appends what must be published (decisions, breach records) to an `Effects` list.
 *
 * Decisions come out on event time, so the same events give the same decisions in a replay:
 * - block when an admitted event makes a limit reached (count == limit: the next request would
 *   exceed it), with `until` = when every limit of the rule has room again;
 * - re-publish the block when `until` moves later by at least one bucket of the blocking window;
 * - unblock when the block lapses: at `until` (driven by `lapse`, a timer), or when a later event
 *   finds room. The unblock is dated `until`, not when the timer fired.
 * A refused request (by a gateway) consumes nothing; it is counted on the open breach.
 */
import type { CompiledLimit, CompiledRule } from '../policy/index.ts';
import { CounterLayout, RollingCounter, windowSpec, type RuleState, type WindowLimit } from '../windows/index.ts';
import type { BreachRecord, Decision } from '../events/index.ts';

export interface OpenBreach {
  windowMs: number;
  /** The limit crossed (an override may change it before the breach closes). Absent in records stored before it was kept. */
  limit?: number;
  firstCrossedAt: number;
  countAtCrossing: number;
  peakCount: number;
  refused: number;
  overshoot: number;
}

export interface PublishedBlock {
  until: number;
  windowMs: number;
}

/** The last near snapshot published (soft state: not persisted; a new owner simply publishes again). */
interface PublishedNear {
  windowMs: number;
  observed: number;
  until: number;
}

/** Everything a counter's transitions ask to publish. */
export interface Effects {
  decisions: Decision[];
  breaches: BreachRecord[];
}

/** Context every decision and record carries. */
export interface DecisionContext {
  policyVersion: string;
  region: string;
  /**
   * Publish a `near` snapshot once a limit's count reaches this share of the limit (0 = never). It
   * tells gateways the count and how many gateways share the counter, so each spends only its share
   * of what remains (see src/gateway/decision-cache.ts).
   */
  nearRatio: number;
  /** Renders the policy's refusal message for a limit at a given retry-after. */
  message(limit: CompiledLimit, retryAfterSeconds: number): string;
}

/** Meta fields stored beside the buckets in the counter's Redis hash. */
export const META_DECISION = '_dec';
export const META_BREACH_PREFIX = '_br:';

const NO_BREACHES: ReadonlyMap<number, OpenBreach> = new Map();

interface Shape {
  layout: CounterLayout;
  windows: readonly WindowLimit[];
  bucketSizes: readonly number[];
}

/** Counters of the same limits share one shape (ring layout, windows with limits, bucket sizes): each holds only its Float64Array. */
const shapes = new Map<string, Shape>();
/** Shapes of the same windows (other limits) share the ring layout. */
const layouts = new Map<string, CounterLayout>();

function shapeFor(limits: readonly CompiledLimit[]): Shape {
  const signature = limits.map((l) => `${l.kind}:${l.windowMs}:${l.bucketMs}:${l.limit}`).join('|');
  let shape = shapes.get(signature);
  if (!shape) {
    const windows = limits.map((l) => ({ limit: l.limit, window: windowSpec(l.windowMs, { bucketMs: l.bucketMs, kind: l.kind }) }));
    const layoutSignature = windows.map((w) => `${w.window.kind}:${w.window.lengthMs}:${w.window.bucketMs}`).join('|');
    let layout = layouts.get(layoutSignature);
    if (!layout) layouts.set(layoutSignature, (layout = new CounterLayout(windows.map((w) => w.window))));
    shape = { layout, windows, bucketSizes: [...new Set(windows.map((w) => w.window.bucketMs))] };
    shapes.set(signature, shape);
  }
  return shape;
}

export class CounterState {
  readonly counter: RollingCounter;
  readonly windows: readonly WindowLimit[];
  block: PublishedBlock | null = null;
  private near: PublishedNear | null = null;
  /** Gateways that sent events for this counter, by id, with the last event time; kept once the counter is half full. */
  private gateways: Map<string, number> | null = null;
  /** Open breaches by window (created on the first: most counters never breach). */
  private openBreaches: Map<number, OpenBreach> | null = null;
  /** Meta fields changed since the last `takeMetaChanges` ("" = delete). */
  private metaChanges: Map<string, string> | null = null;

  constructor(
    readonly counterKey: string,
    readonly tenantKey: string,
    readonly rule: CompiledRule,
    readonly limits: readonly CompiledLimit[],
    /** The key overrides are set under (rule + scope values). */
    readonly scopeKey: string = '',
  ) {
    const shape = shapeFor(limits);
    this.counter = new RollingCounter(shape.layout);
    this.windows = shape.windows;
    this.bucketSizes = shape.bucketSizes;
  }

  /** Bucket sizes of this counter's rings (the `b<bucketMs>:<index>` fields in Redis); read per event, so computed once. */
  readonly bucketSizes: readonly number[];

  /** Open breaches by window. */
  get breaches(): ReadonlyMap<number, OpenBreach> {
    return this.openBreaches ?? NO_BREACHES;
  }

  private breachMap(): Map<number, OpenBreach> {
    return (this.openBreaches ??= new Map());
  }

  private changes(): Map<string, string> {
    return (this.metaChanges ??= new Map());
  }

  /** Restores the stored meta fields (last block, open breaches) after a load from Redis. */
  restoreMeta(meta: ReadonlyMap<string, string>): void {
    const dec = meta.get(META_DECISION);
    this.block = dec ? (JSON.parse(dec) as PublishedBlock) : null;
    for (const [field, value] of meta) {
      if (field.startsWith(META_BREACH_PREFIX)) {
        const b = JSON.parse(value) as OpenBreach;
        this.breachMap().set(b.windowMs, b);
      }
    }
  }

  takeMetaChanges(): Array<[string, string]> {
    if (this.metaChanges === null || this.metaChanges.size === 0) return [];
    const out = [...this.metaChanges];
    this.metaChanges = null;
    return out;
  }

  /** Puts back meta changes a write could not deliver; newer changes to the same field win. */
  requeueMeta(changes: ReadonlyArray<readonly [string, string]>): void {
    for (const [field, value] of changes) if (!this.metaChanges?.has(field)) this.changes().set(field, value);
  }

  /** An admitted request (or a shadow-refused one, which is let through): counts, then decides. */
  admit(t: number, cost: number, ctx: DecisionContext, out: Effects, gatewayId?: string): void {
    this.counter.add(t, cost);
    if (this.gateways !== null && gatewayId !== undefined && (this.gateways.get(gatewayId) ?? -Infinity) < t) this.gateways.set(gatewayId, t);
    this.evaluate(t, cost, ctx, out, gatewayId);
  }

  /** Gateways that sent events for this counter within `windowMs` before `t` (at least 1). */
  private activeGateways(t: number, windowMs: number): number {
    if (this.gateways === null) return 1;
    let n = 0;
    for (const [id, at] of this.gateways) {
      if (at > t - windowMs) n++;
      else this.gateways.delete(id);
    }
    return Math.max(1, n);
  }

  /** A request a gateway refused: consumes no quota; counted on the breach that caused it. */
  refused(windowMs: number, cost: number): void {
    const b = this.breaches.get(windowMs) ?? this.breaches.values().next().value;
    if (!b) return; // refused under a block this aggregator has already lifted: nothing open to charge
    b.refused += cost;
    this.changes().set(META_BREACH_PREFIX + b.windowMs, JSON.stringify(b));
  }

  /**
   * This counter under new limits (an override was set, changed or removed): what was admitted in
   * the current windows (RollingCounter.carryFrom), the block and open breaches carried over, then
   * decided again at `now`, so a raised limit lifts the block at once and a lowered one blocks.
   */
  withLimits(limits: readonly CompiledLimit[], now: number, ctx: DecisionContext, out: Effects): CounterState {
    const next = new CounterState(this.counterKey, this.tenantKey, this.rule, limits, this.scopeKey);
    next.counter.carryFrom(this.counter);
    next.block = this.block;
    next.metaChanges = this.metaChanges === null ? null : new Map(this.metaChanges);
    const kept = new Set(limits.map((l) => l.windowMs));
    for (const [windowMs, b] of this.breaches) {
      const old = this.limits.find((l) => l.windowMs === windowMs)!;
      if (kept.has(windowMs)) next.breachMap().set(windowMs, b);
      else next.closeBreach(b, old, now, ctx, out); // that limit no longer exists
    }
    next.evaluate(now, 0, ctx, out);
    return next;
  }

  /** The key became unlimited: lift its block and close its breaches now. */
  lift(now: number, ctx: DecisionContext, out: Effects): void {
    for (const b of [...this.breaches.values()]) this.closeBreach(b, this.limits.find((l) => l.windowMs === b.windowMs)!, now, ctx, out);
    if (this.block) {
      const limit = this.limits.find((l) => l.windowMs === this.block!.windowMs) ?? this.limits[0]!;
      out.decisions.push(this.decision('unblock', limit, now, 0, now, ctx));
      this.block = null;
      this.changes().set(META_DECISION, '');
    }
  }

  private closeBreach(b: OpenBreach, limit: CompiledLimit, at: number, ctx: DecisionContext, out: Effects): void {
    this.openBreaches?.delete(b.windowMs);
    this.changes().set(META_BREACH_PREFIX + b.windowMs, '');
    out.breaches.push(this.record(b, limit, at, ctx));
  }

  /** The instant a timer should call `lapse`, or undefined when nothing is blocked. */
  lapsesAt(): number | undefined {
    return this.block?.until;
  }

  /** The block's `until` has passed (`now` >= until): unblock, or re-block if events refilled it. */
  lapse(now: number, ctx: DecisionContext, out: Effects): void {
    if (!this.block || now < this.block.until) return;
    this.evaluate(this.block.until, 0, ctx, out);
  }

  /**
   * True when the counter counts nothing from `now` on, holds no block or breach and has no meta
   * change still to write: it may be dropped from memory (Redis has all of it).
   */
  idle(now: number): boolean {
    return this.block === null && this.breaches.size === 0 && (this.metaChanges?.size ?? 0) === 0 && this.counter.expiresAt <= now;
  }

  /**
   * True when deciding at `t` can change nothing: no block, no open breach, and every count below
   * both its limit and the near threshold. Then `evaluate` has nothing to do but note, once a count
   * reaches half its limit, which gateway sends for the counter. The counts come from the running
   * sums (O(1) per window), so an event far from any limit costs no full state.
   */
  private quiet(t: number, ctx: DecisionContext, gatewayId: string | undefined): boolean {
    if (this.block !== null || this.breaches.size !== 0) return false;
    for (let i = 0; i < this.windows.length; i++) {
      const limit = this.windows[i]!.limit;
      const count = this.counter.windowCount(i, t);
      if (count >= limit || (ctx.nearRatio > 0 && count >= Math.ceil(limit * ctx.nearRatio) && limit - count >= 2)) return false;
      if (ctx.nearRatio > 0 && this.gateways === null && gatewayId !== undefined && count * 2 >= limit) this.gateways = new Map([[gatewayId, t]]);
    }
    return true;
  }

  private evaluate(t: number, cost: number, ctx: DecisionContext, out: Effects, gatewayId?: string): void {
    if (this.quiet(t, ctx, gatewayId)) return;
    const state = this.counter.state(this.windows, t);
    let blocking: { index: number; until: number } | undefined;
    for (let i = 0; i < state.limits.length; i++) {
      const s = state.limits[i]!;
      const limit = this.limits[i]!;
      const open = this.breaches.get(limit.windowMs);
      if (s.reached) {
        if (!blocking || s.until > blocking.until) blocking = { index: i, until: s.until };
        if (!open) {
          const b: OpenBreach = {
            windowMs: limit.windowMs,
            limit: limit.limit,
            firstCrossedAt: t,
            countAtCrossing: s.count,
            peakCount: s.count,
            refused: 0,
            overshoot: Math.max(0, Math.min(cost, s.count - limit.limit)),
          };
          this.breachMap().set(limit.windowMs, b);
          this.changes().set(META_BREACH_PREFIX + limit.windowMs, JSON.stringify(b));
          out.breaches.push(this.record(b, limit, null, ctx));
        } else if (cost > 0) {
          // Admitted over the limit: the decision had not reached the gateway, or its share ran over.
          open.overshoot += Math.max(0, Math.min(cost, s.count - limit.limit));
          open.peakCount = Math.max(open.peakCount, s.count);
          this.changes().set(META_BREACH_PREFIX + limit.windowMs, JSON.stringify(open));
        }
      } else if (open) {
        this.closeBreach(open, limit, t, ctx, out);
      }
    }

    if (blocking) {
      const until = state.until; // every limit has room only then
      const limit = this.limits[blocking.index]!;
      const material = !this.block || until >= this.block.until + limit.bucketMs;
      if (material) {
        this.block = { until, windowMs: limit.windowMs };
        this.changes().set(META_DECISION, JSON.stringify(this.block));
        out.decisions.push(this.decision('block', limit, until, state.limits[blocking.index]!.count, t, ctx));
      }
    } else if (this.block) {
      const limit = this.limits.find((l) => l.windowMs === this.block!.windowMs) ?? this.limits[0]!;
      const i = this.limits.indexOf(limit);
      out.decisions.push(this.decision('unblock', limit, t, state.limits[i]?.count ?? 0, t, ctx));
      this.block = null;
      this.changes().set(META_DECISION, '');
    }
    if (blocking) this.near = null;
    else if (ctx.nearRatio > 0) this.evaluateNear(state.limits, t, ctx, out, gatewayId);
  }

  /**
   * Near a limit (count >= nearRatio × limit, with at least 2 requests of room left): publish a `near`
   * snapshot with the count and the gateways sharing the counter, valid until the count next goes down.
   * Again only when the last one has expired, or the room left has halved since it, so a counter
   * approaching its limit publishes O(log limit) snapshots, not one per event.
   */
  private evaluateNear(limits: RuleState['limits'], t: number, ctx: DecisionContext, out: Effects, gatewayId: string | undefined): void {
    let best = -1;
    for (let i = 0; i < limits.length; i++) {
      const s = limits[i]!;
      if (this.gateways === null && gatewayId !== undefined && s.count * 2 >= s.limit) this.gateways = new Map([[gatewayId, t]]);
      if (s.count < Math.ceil(s.limit * ctx.nearRatio) || s.limit - s.count < 2) continue;
      if (best < 0 || s.remaining < limits[best]!.remaining) best = i;
    }
    if (best < 0) return;
    const s = limits[best]!;
    const limit = this.limits[best]!;
    const last = this.near;
    const due = last === null || t >= last.until || last.windowMs !== limit.windowMs || limit.limit - s.count <= (limit.limit - last.observed) / 2;
    if (!due) return;
    const until = Math.max(s.reset, t + limit.bucketMs);
    this.near = { windowMs: limit.windowMs, observed: s.count, until };
    const d = this.decision('near', limit, until, s.count, t, ctx);
    d.gateways = this.activeGateways(t, limit.windowMs);
    out.decisions.push(d);
  }

  private decision(state: Decision['state'], limit: CompiledLimit, until: number, observed: number, at: number, ctx: DecisionContext): Decision {
    return {
      schemaVersion: 1,
      counterKey: this.counterKey,
      tenant: this.tenantKey,
      rule: this.rule.id,
      window: limit.window,
      windowMs: limit.windowMs,
      windowKind: limit.kind,
      state,
      until,
      limit: limit.limit,
      observed,
      message: ctx.message(limit, Math.max(1, Math.ceil((until - at) / 1000))),
      policyVersion: ctx.policyVersion,
      region: ctx.region,
      decidedAt: at,
    };
  }

  private record(b: OpenBreach, limit: CompiledLimit, liftedAt: number | null, ctx: DecisionContext): BreachRecord {
    return {
      schemaVersion: 1,
      tenant: this.tenantKey,
      counterKey: this.counterKey,
      rule: this.rule.id,
      window: limit.window,
      windowMs: limit.windowMs,
      windowKind: limit.kind,
      limit: b.limit ?? limit.limit,
      firstCrossedAt: b.firstCrossedAt,
      countAtCrossing: b.countAtCrossing,
      peakCount: b.peakCount,
      liftedAt,
      refused: b.refused,
      overshoot: b.overshoot,
      policyVersion: ctx.policyVersion,
      region: ctx.region,
    };
  }
}
