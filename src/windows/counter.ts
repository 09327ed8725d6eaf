/**
 * One counting key's buckets for the limits of its rule, held in memory by the aggregator (about a
 * million of them), so it is one Float64Array and a shared layout rather than an object per bucket.
 *
 * The layout (shared by every counter of a rule) groups the rule's windows by bucket size: each
 * bucket size gets one ring of `size` slots (the most buckets any of those windows spans) plus one
 * slot holding `top`, the newest bucket index seen. The ring holds buckets (top - size, top]; an
 * older event can no longer count in any of its windows and is ignored. `60/min + 1800/h` with the
 * default resolution is two rings (1s × 60, 1m × 60): 122 doubles.
 *
 * Memory, measured with process.memoryUsage() over 200,000 counters (Node 20, x64): ~232 B of heap
 * (the counter, its Float64Array and ArrayBuffer objects) + 8 B per slot off-heap, plus malloc's
 * share: `1m` alone (61 slots) 720 B (1.05 KB RSS); `1m + 1h` (122 slots) 1.2 KB (1.44 KB RSS), so
 * ~1.4 GB for a million such counters. Float64 keeps sums exact up to 2^53 whatever the costs
 * (tokens, coalesced requests). If that is too much: Uint32 slots halve the slot bytes (and can
 * overflow), and a slab (one big array, a counter = an offset) drops the per-counter ~230 B + malloc.
 *
 * Counts, until and reset equal the pure functions over all events added whenever the newest event
 * is at most the layout's `aheadMs` after `now` (with aheadMs 0: `now` at or after the newest event,
 * e.g. the aggregator's watermark). Further ahead, the ring has overwritten buckets `now` still counts.
 */
import { QuotaflowError } from '../errors.ts';
import { assertUsage, countedRange, jointUntil } from './buckets.ts';
import type { Buckets, LimitState, RuleState, WindowLimit } from './buckets.ts';
import { bucketsIn, describeWindow } from './spec.ts';
import type { WindowSpec } from './spec.ts';

/** Where each bucket size's ring lives in a counter's array; share one per rule. */
export class CounterLayout {
  readonly windows: readonly WindowSpec[];
  readonly aheadMs: number;
  /** Per ring: bucket width (ms), number of slots, offset of its `top` slot (slots follow it). */
  readonly ringBucketMs: readonly number[];
  readonly ringSize: readonly number[];
  readonly ringOffset: readonly number[];
  /** Length of each counter's array. */
  readonly slots: number;
  private readonly ringByBucketMs: ReadonlyMap<number, number>;

  /**
   * `aheadMs`: how far ahead of the `now` you will ask about events may be (the future skew the
   * aggregator accepts). Each ring keeps that many more ms of buckets, so an event ahead of `now`
   * does not push out a bucket that `now` still counts.
   */
  constructor(windows: readonly WindowSpec[], options: { aheadMs?: number } = {}) {
    if (windows.length === 0) {
      throw new QuotaflowError('CONFIG_INVALID', 'a counter needs at least one window');
    }
    const aheadMs = options.aheadMs ?? 0;
    if (!Number.isSafeInteger(aheadMs) || aheadMs < 0) {
      throw new QuotaflowError('CONFIG_INVALID', `aheadMs must be a whole number of ms >= 0, got ${String(aheadMs)}`);
    }
    const sizeByBucketMs = new Map<number, number>();
    for (const w of windows) sizeByBucketMs.set(w.bucketMs, Math.max(sizeByBucketMs.get(w.bucketMs) ?? 0, bucketsIn(w)));
    for (const [ms, n] of sizeByBucketMs) sizeByBucketMs.set(ms, n + Math.ceil(aheadMs / ms));
    const bucketMs: number[] = [];
    const size: number[] = [];
    const offset: number[] = [];
    const ringByBucketMs = new Map<number, number>();
    let slots = 0;
    for (const [ms, n] of sizeByBucketMs) {
      ringByBucketMs.set(ms, bucketMs.length);
      bucketMs.push(ms);
      size.push(n);
      offset.push(slots);
      slots += 1 + n;
    }
    // After the rings: one slot per ring saying whether its windows' sums are up to date (1) or
    // must be summed again (0), then one running sum per window.
    this.ringValidOffset = bucketMs.map((_, r) => slots + r);
    slots += bucketMs.length;
    this.windowRing = windows.map((w) => ringByBucketMs.get(w.bucketMs)!);
    this.windowBuckets = windows.map((w) => bucketsIn(w));
    this.windowFixed = windows.map((w) => w.kind === 'fixed');
    this.windowSumOffset = windows.map((_, i) => slots + i);
    slots += windows.length;
    this.ringWindows = bucketMs.map((_, r) => windows.map((_, i) => i).filter((i) => this.windowRing[i] === r));
    this.windows = windows;
    this.aheadMs = aheadMs;
    this.ringBucketMs = bucketMs;
    this.ringSize = size;
    this.ringOffset = offset;
    this.slots = slots;
    this.ringByBucketMs = ringByBucketMs;
  }

  /** Per window (in `windows` order): its ring, its buckets, whether it is fixed, where its running sum is. */
  readonly windowRing: readonly number[];
  readonly windowBuckets: readonly number[];
  readonly windowFixed: readonly boolean[];
  readonly windowSumOffset: readonly number[];
  /** Per ring: the windows it serves, and where its "sums up to date" flag is. */
  readonly ringWindows: readonly (readonly number[])[];
  readonly ringValidOffset: readonly number[];

  /** The ring that serves `window`; throws if the layout was not built for it. */
  ringOf(window: WindowSpec): number {
    const r = this.ringByBucketMs.get(window.bucketMs);
    if (r === undefined || this.ringSize[r]! < bucketsIn(window)) {
      throw new QuotaflowError('CONFIG_INVALID', `this counter does not keep window ${describeWindow(window)}`, {
        hint: 'build the CounterLayout from every window of the rule',
      });
    }
    return r;
  }
}

export class RollingCounter {
  readonly layout: CounterLayout;
  private readonly data: Float64Array;

  /** Pass a shared CounterLayout when holding many counters of one rule; a window list builds its own. */
  constructor(layout: CounterLayout | readonly WindowSpec[]) {
    this.layout = layout instanceof CounterLayout ? layout : new CounterLayout(layout);
    this.data = new Float64Array(this.layout.slots);
    for (const o of this.layout.ringOffset) this.data[o] = -Infinity; // empty: no newest bucket yet
    for (const o of this.layout.ringValidOffset) this.data[o] = 1; // every sum is 0, and right
  }

  /**
   * Counts an event of `cost` at event time `t` in every ring. Returns false when it is too old for
   * all of them (it could no longer count anywhere: late).
   */
  add(t: number, cost = 1): boolean {
    assertUsage(t, cost);
    const { data, layout } = this;
    let held = false;
    for (let r = 0; r < layout.ringOffset.length; r++) {
      const o = layout.ringOffset[r]!;
      const size = layout.ringSize[r]!;
      const b = Math.floor(t / layout.ringBucketMs[r]!);
      const top = data[o]!;
      const valid = data[layout.ringValidOffset[r]!] === 1;
      if (b > top) {
        // The running sums move to the new top first: the buckets that leave a rolling window are
        // still in the ring until the advance below zeroes their slots.
        if (valid) this.slideSums(r, top, b);
        // Advance: the buckets between the old top and b are new and start at zero.
        if (b - top >= size) data.fill(0, o + 1, o + 1 + size);
        else for (let x = top + 1; x <= b; x++) data[o + 1 + slot(x, size)] = 0;
        data[o] = b;
      } else if (b <= top - size) {
        continue;
      }
      data[o + 1 + slot(b, size)]! += cost;
      if (valid) {
        const newest = data[o]!;
        for (const w of layout.ringWindows[r]!) {
          const n = layout.windowBuckets[w]!;
          if (layout.windowFixed[w] ? Math.floor(b / n) === Math.floor(newest / n) : b > newest - n) data[layout.windowSumOffset[w]!]! += cost;
        }
      }
      held = true;
    }
    return held;
  }

  /** Moves the running sums of ring r's windows from newest bucket `from` to `to` (> from). */
  private slideSums(r: number, from: number, to: number): void {
    const { data, layout } = this;
    for (const w of layout.ringWindows[r]!) {
      const n = layout.windowBuckets[w]!;
      const at = layout.windowSumOffset[w]!;
      if (layout.windowFixed[w]) {
        if (Math.floor(to / n) !== Math.floor(from / n)) data[at] = 0;
      } else if (to - from >= n) {
        data[at] = 0;
      } else {
        // Buckets (from - n, to - n] leave the window; all of them are still held.
        let gone = 0;
        for (let x = from - n + 1; x <= to - n; x++) gone += this.bucket(r, x);
        data[at]! -= gone;
      }
    }
  }

  /** Sums ring r's windows again at its newest bucket (after buckets were put in by other means than `add`). */
  private resum(r: number): void {
    const { data, layout } = this;
    const top = data[layout.ringOffset[r]!]!;
    for (const w of layout.ringWindows[r]!) {
      const n = layout.windowBuckets[w]!;
      const first = layout.windowFixed[w] ? Math.floor(top / n) * n : top - n + 1;
      data[layout.windowSumOffset[w]!] = top === -Infinity ? 0 : this.sum(r, first, layout.windowFixed[w] ? first + n - 1 : top);
    }
    data[layout.ringValidOffset[r]!] = 1;
  }

  /**
   * The count of the layout's `i`-th window at `now`: O(1) when `now` is in the newest bucket (the
   * aggregator asks at the event it just added), a sum over the window's buckets otherwise.
   */
  windowCount(i: number, now: number): number {
    const { data, layout } = this;
    const r = layout.windowRing[i]!;
    const top = data[layout.ringOffset[r]!]!;
    const cur = Math.floor(now / layout.ringBucketMs[r]!);
    const n = layout.windowBuckets[i]!;
    if (layout.windowFixed[i] ? Math.floor(cur / n) === Math.floor(top / n) : cur === top) {
      if (data[layout.ringValidOffset[r]!] !== 1) this.resum(r);
      return data[layout.windowSumOffset[i]!]!;
    }
    return this.count(layout.windows[i]!, now);
  }

  /**
   * Restores one stored bucket (from Redis) into the ring of that bucket size only; `add` would put
   * it into every ring and count it twice once the other sizes' buckets are restored too.
   * Returns false when no ring has that bucket size or the bucket is too old for it.
   */
  loadBucket(bucketMs: number, bucketIndex: number, count: number): boolean {
    const r = this.layout.ringBucketMs.indexOf(bucketMs);
    if (r < 0) return false;
    const { data, layout } = this;
    const o = layout.ringOffset[r]!;
    const size = layout.ringSize[r]!;
    const top = data[o]!;
    if (bucketIndex > top) {
      if (top === -Infinity || bucketIndex - top >= size) data.fill(0, o + 1, o + 1 + size);
      else for (let x = top + 1; x <= bucketIndex; x++) data[o + 1 + slot(x, size)] = 0;
      data[o] = bucketIndex;
    } else if (bucketIndex <= top - size) {
      return false;
    }
    data[o + 1 + slot(bucketIndex, size)]! += count;
    data[layout.ringValidOffset[r]!] = 0;
    return true;
  }

  /**
   * Adds what `from` (the same key's counter under other limits: an override was set or removed)
   * holds, so a change of limits keeps what was admitted in the current windows. A ring of a bucket
   * size `from` also keeps takes its buckets as they are; otherwise it sums the buckets of `from`'s
   * coarsest ring whose size divides its own, exactly; failing that, each old bucket counts in the
   * new bucket where it starts. History older than `from`'s rings is not there to carry.
   */
  carryFrom(from: RollingCounter): void {
    const old = from.layout;
    for (let r = 0; r < this.layout.ringBucketMs.length; r++) {
      const ms = this.layout.ringBucketMs[r]!;
      let source = old.ringBucketMs.indexOf(ms);
      if (source < 0) {
        for (let s = 0; s < old.ringBucketMs.length; s++) {
          const oldMs = old.ringBucketMs[s]!;
          if (ms % oldMs === 0 && (source < 0 || oldMs > old.ringBucketMs[source]!)) source = s;
        }
      }
      if (source < 0) source = old.ringBucketMs.indexOf(Math.min(...old.ringBucketMs));
      const oldMs = old.ringBucketMs[source]!;
      const o = old.ringOffset[source]!;
      const size = old.ringSize[source]!;
      const top = from.data[o]!;
      if (top === -Infinity) continue;
      for (let b = top - size + 1; b <= top; b++) {
        const c = from.data[o + 1 + slot(b, size)]!;
        if (c !== 0) this.loadBucket(ms, Math.floor((b * oldMs) / ms), c);
      }
    }
  }

  /** The window's count at `now` (same semantics as `count` over buckets). */
  count(window: WindowSpec, now: number): number {
    assertNow(now);
    const r = this.layout.ringOf(window);
    const n = window.lengthMs / window.bucketMs;
    const cur = Math.floor(now / window.bucketMs);
    // Inlined countedRange: this is the hot path, keep it free of allocations.
    const first = window.kind === 'rolling' ? cur - n + 1 : Math.floor(cur / n) * n;
    return this.sum(r, first, window.kind === 'rolling' ? cur : first + n - 1);
  }

  /** When every limit has room for `cost` (`now` if it already has); see `ruleUntil`. */
  until(limits: readonly WindowLimit[], now: number, cost = 1): number {
    return jointUntil(limits.length, (i, from) => this.untilOne(limits[i]!, from, cost), now);
  }

  /** Every limit's count, reached, remaining, reset and until, and the rule's `until`. */
  state(limits: readonly WindowLimit[], now: number): RuleState {
    const states: LimitState[] = [];
    let reached = false;
    for (const l of limits) {
      const c = this.count(l.window, now);
      const isReached = c >= l.limit;
      reached ||= isReached;
      states.push({
        limit: l.limit,
        window: l.window,
        count: c,
        reached: isReached,
        remaining: Math.max(0, l.limit - c),
        reset: this.resetTime(l.window, now),
        until: isReached ? this.untilOne(l, now, 1) : now,
      });
    }
    return { limits: states, reached, until: reached ? this.until(limits, now) : now };
  }

  /** Rolling: when the oldest counted bucket expires (`now` if nothing counts); fixed: the next boundary. */
  resetTime(window: WindowSpec, now: number): number {
    assertNow(now);
    const r = this.layout.ringOf(window);
    const [first, last] = countedRange(window, now);
    if (window.kind === 'fixed') return (last + 1) * window.bucketMs;
    for (let b = first; b <= last; b++) {
      if (this.bucket(r, b) !== 0) return (b + bucketsIn(window)) * window.bucketMs;
    }
    return now;
  }

  /** From this instant on every window counts zero: the aggregator may drop the counter. */
  get expiresAt(): number {
    let at = -Infinity;
    for (let r = 0; r < this.layout.ringOffset.length; r++) {
      const top = this.data[this.layout.ringOffset[r]!]!;
      at = Math.max(at, (top + this.layout.ringSize[r]!) * this.layout.ringBucketMs[r]!);
    }
    return at;
  }

  /**
   * The total of one bucket of the given size, as held (0 for an empty bucket the ring covers);
   * undefined when no ring has that size or the bucket is outside the ring (too old, or not reached).
   */
  bucketTotal(bucketMs: number, bucketIndex: number): number | undefined {
    const r = this.layout.ringBucketMs.indexOf(bucketMs);
    if (r < 0) return undefined;
    const top = this.data[this.layout.ringOffset[r]!]!;
    if (bucketIndex > top || bucketIndex <= top - this.layout.ringSize[r]!) return undefined;
    return this.bucket(r, bucketIndex);
  }

  /** A copy of the non-zero buckets kept at `window`'s resolution (to persist, or to check). */
  buckets(window: WindowSpec): Buckets {
    const r = this.layout.ringOf(window);
    const o = this.layout.ringOffset[r]!;
    const size = this.layout.ringSize[r]!;
    const top = this.data[o]!;
    const out: Buckets = new Map();
    if (top === -Infinity) return out;
    for (let b = top - size + 1; b <= top; b++) {
      const c = this.data[o + 1 + slot(b, size)]!;
      if (c !== 0) out.set(b, c);
    }
    return out;
  }

  private untilOne(l: WindowLimit, now: number, cost: number): number {
    const { window, limit } = l;
    const room = limit - cost;
    if (this.count(window, now) <= room) return now;
    if (room < 0) return Infinity;
    const r = this.layout.ringOf(window);
    const n = bucketsIn(window);
    const top = this.data[this.layout.ringOffset[r]!]!;
    const cur = Math.floor(now / window.bucketMs);
    if (window.kind === 'fixed') {
      // Later windows only hold events ahead of `now`; stops by the first window after `top`.
      for (let w = Math.floor(cur / n) + 1; ; w++) {
        if (this.sum(r, w * n, w * n + n - 1) <= room) return w * window.lengthMs;
      }
    }
    // Slide one bucket at a time: the ring is contiguous, and a counted bucket lies within `size`
    // of `top`, so this ends within size + n steps (at k = top + n the count is 0).
    let sum = this.sum(r, cur - n + 1, cur);
    for (let k = cur + 1; k <= top + n; k++) {
      sum += this.bucket(r, k) - this.bucket(r, k - n);
      if (sum <= room) return k * window.bucketMs;
    }
    return Infinity; // unreachable while room >= 0
  }

  /** Bucket b's total, 0 when the ring does not hold it. */
  private bucket(r: number, b: number): number {
    const o = this.layout.ringOffset[r]!;
    const size = this.layout.ringSize[r]!;
    const top = this.data[o]!;
    return b > top || b <= top - size ? 0 : this.data[o + 1 + slot(b, size)]!;
  }

  /** Sum of buckets [first, last], clipped to those the ring holds. */
  private sum(r: number, first: number, last: number): number {
    const o = this.layout.ringOffset[r]!;
    const size = this.layout.ringSize[r]!;
    const top = this.data[o]!;
    const hi = Math.min(last, top);
    let s = 0;
    for (let b = Math.max(first, top - size + 1); b <= hi; b++) s += this.data[o + 1 + slot(b, size)]!;
    return s;
  }
}

/** A time to ask about: a bucket walk from a non-finite one would never end. */
function assertNow(now: number): void {
  if (!Number.isFinite(now)) throw new RangeError(`a counter is asked about a time, in ms; got ${now}`);
}

/** Ring slot of bucket b (b may be negative for times before 1970). */
function slot(b: number, size: number): number {
  return ((b % size) + size) % size;
}
