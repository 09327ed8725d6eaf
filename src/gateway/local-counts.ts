/**
 * What this gateway has admitted itself, per counter, in the same rolling windows the aggregators
 * count (same bucket layout, same event time). The global count is never below it, so a key this
 * gateway alone has filled is refused here without waiting for a decision: a gateway that sees all
 * of a key's traffic never overshoots. It also gives the headers their remaining-count estimate.
 *
 * Bounded: counters that count nothing any more are swept, and past `maxKeys` the oldest are dropped
 * (forgetting a counter only makes this gateway less strict, never stricter).
 */
import type { CompiledLimit } from '../policy/index.ts';
import { CounterLayout, RollingCounter, windowSpec, type WindowLimit } from '../windows/index.ts';
import { CoalesceSlot } from './emitter.ts';

interface Entry {
  counter: RollingCounter;
  windows: readonly WindowLimit[];
  limits: readonly CompiledLimit[];
  /** The emitter's coalescing candidates of this counter's events, kept here so a check finds them without another lookup. */
  coalesce: CoalesceSlot;
}

const layouts = new WeakMap<readonly CompiledLimit[], { layout: CounterLayout; windows: WindowLimit[] }>();

function layoutFor(limits: readonly CompiledLimit[]): { layout: CounterLayout; windows: WindowLimit[] } {
  let l = layouts.get(limits);
  if (!l) {
    const windows = limits.map((x) => ({ limit: x.limit, window: windowSpec(x.windowMs, { bucketMs: x.bucketMs, kind: x.kind }) }));
    l = { layout: new CounterLayout(windows.map((w) => w.window)), windows };
    layouts.set(limits, l);
  }
  return l;
}

export interface OwnCount {
  /** This gateway's admissions in the window at `now`. */
  count: number;
  /** When the count next goes down (rolling) or the window resets (fixed). */
  reset: number;
}

export class LocalCounts {
  private readonly entries = new Map<string, Entry>();
  /**
   * The entry found last, and its key: a check asks about one counter several times (its counts, the
   * admission, the headers), and a Map lookup hashes the key, a string built anew for each request.
   */
  private lastKey: string | undefined;
  private last: Entry | undefined;

  constructor(private readonly maxKeys = 200_000) {}

  /** The counter's entry under `limits`, or undefined for a counter never seen (nothing is created). */
  private find(counterKey: string, limits: readonly CompiledLimit[]): Entry | undefined {
    if (counterKey === this.lastKey && this.last!.limits === limits) return this.last;
    const e = this.entries.get(counterKey);
    if (e === undefined) return undefined;
    this.lastKey = counterKey;
    this.last = e;
    if (e.limits === limits) return e;
    // Its limits changed (an override): what this gateway admitted in the current windows still
    // counts against the new limits, or a raised limit would start from zero and overshoot.
    const { layout, windows } = layoutFor(limits);
    const counter = new RollingCounter(layout);
    counter.carryFrom(e.counter);
    const next = { counter, windows, limits, coalesce: e.coalesce };
    this.entries.set(counterKey, next);
    this.last = next;
    return next;
  }

  private entry(counterKey: string, limits: readonly CompiledLimit[]): Entry {
    let e = this.find(counterKey, limits);
    if (e === undefined) {
      const { layout, windows } = layoutFor(limits);
      e = { counter: new RollingCounter(layout), windows, limits, coalesce: new CoalesceSlot() };
      if (this.entries.size >= this.maxKeys) this.forget(this.entries.keys().next().value!);
      this.entries.set(counterKey, e);
      this.lastKey = counterKey;
      this.last = e;
    }
    return e;
  }

  /** Records an admission of `cost` at `now`. */
  add(counterKey: string, limits: readonly CompiledLimit[], now: number, cost = 1): void {
    this.entry(counterKey, limits).counter.add(now, cost);
  }

  /** The counter's coalescing slot, for a counter this gateway holds (see Emitter.enqueue). */
  coalesceSlot(counterKey: string, limits: readonly CompiledLimit[]): CoalesceSlot | undefined {
    return this.find(counterKey, limits)?.coalesce;
  }

  /** The index of the first limit this gateway's own admissions have reached at `now`, or -1. */
  reached(counterKey: string, limits: readonly CompiledLimit[], now: number): number {
    const e = this.find(counterKey, limits);
    if (e === undefined) return -1;
    for (let i = 0; i < e.windows.length; i++) {
      const w = e.windows[i]!;
      if (e.counter.windowCount(i, now) >= w.limit) return i;
    }
    return -1;
  }

  /** Own count per limit into `out` (zeros for a counter never seen): the check's hot path, without reset times or allocation. */
  countsInto(counterKey: string, limits: readonly CompiledLimit[], now: number, out: number[]): void {
    const e = this.find(counterKey, limits);
    for (let i = 0; i < limits.length; i++) out[i] = e === undefined ? 0 : e.counter.windowCount(i, now);
  }

  /** Own count and reset per limit (zeros for a counter never seen). */
  counts(counterKey: string, limits: readonly CompiledLimit[], now: number): OwnCount[] {
    const e = this.find(counterKey, limits);
    if (e === undefined) return limits.map(() => ({ count: 0, reset: now }));
    // windowCount: O(1) from the running sums when `now` is in the newest bucket (the usual case).
    return e.windows.map((w, i) => ({ count: e.counter.windowCount(i, now), reset: e.counter.resetTime(w.window, now) }));
  }

  /**
   * When every limit has room for `cost` more from this gateway's own admissions alone (Infinity
   * when `cost` exceeds a limit: it never fits).
   */
  until(counterKey: string, limits: readonly CompiledLimit[], now: number, cost = 1): number {
    const e = this.find(counterKey, limits);
    if (e === undefined) return limits.some((l) => cost > l.limit) ? Infinity : now;
    return e.counter.until(e.windows, now, cost);
  }

  /** Drops counters that count nothing from `now` on; returns how many. */
  sweep(now: number): number {
    let dropped = 0;
    for (const [key, e] of this.entries) {
      if (e.counter.expiresAt <= now) {
        this.forget(key);
        dropped++;
      }
    }
    return dropped;
  }

  private forget(counterKey: string): void {
    this.entries.delete(counterKey);
    if (counterKey === this.lastKey) this.lastKey = this.last = undefined;
  }

  get size(): number {
    return this.entries.size;
  }
}
