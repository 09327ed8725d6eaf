/**
 * Window arithmetic over sparse buckets: `Map<bucketIndex, cost>` with `bucketIndex = floor(t / bucketMs)`.
 *
 * Why a Map rather than a sorted array: usage arrives out of order (several gateways, replays), and a
 * Map takes any bucket in O(1) without shifting; it mirrors how the store keeps a counter (a Redis
 * hash of bucket → total, HINCRBY), and once pruned it holds at most one window of buckets, so the
 * O(size) scans below are O(n). `until` sorts the keys it needs, only when a limit is reached.
 *
 * Semantics (the contract the aggregator and gateways rely on), with B = bucketMs, n = lengthMs / B,
 * cur = floor(now / B):
 * - rolling count at `now`: buckets (cur - n, cur]. Bucket b stops counting at `(b + n) * B`. At the
 *   last ms of a bucket (now = k*B - 1) this is exactly the events in (now - lengthMs, now]; in between,
 *   the oldest bucket has already left while part of it is younger than lengthMs, so for events at or
 *   before now:  log(now - lengthMs + B - 1, now] <= count(now) <= log(now - lengthMs, now]
 *   ("exact to the bucket": each event counts for between lengthMs - B + 1 and lengthMs ms).
 * - fixed count at `now`: events in [floor(now/L)*L, floor(now/L)*L + L), L = lengthMs (epoch-aligned,
 *   so `1d` is a UTC day).
 * - a limit is reached when count >= limit: the next request would exceed it.
 * - `until`: the earliest T >= now at which, if nothing more is admitted, count(T) + cost <= limit.
 *
 * These read functions never mutate; `recordUsage` and `pruneBuckets` change the Map in place, explicitly.
 */
import type { WindowSpec } from './spec.ts';

/** bucket index → total cost of the events in that bucket. */
export type Buckets = Map<number, number>;

/** One limit of a rule: at most `limit` units per `window`. */
export interface WindowLimit {
  readonly limit: number;
  readonly window: WindowSpec;
}

/** A limit together with the buckets (at `window.bucketMs` resolution) that count against it. */
export interface CountedLimit extends WindowLimit {
  readonly buckets: ReadonlyMap<number, number>;
}

export interface LimitState {
  readonly limit: number;
  readonly window: WindowSpec;
  readonly count: number;
  /** count >= limit: the next request would exceed the limit. */
  readonly reached: boolean;
  /** max(0, limit - count). */
  readonly remaining: number;
  /**
   * For `X-RateLimit-Reset`: the next instant the count goes down. Rolling: when the oldest counted
   * bucket expires (`now` if nothing is counted); fixed: the next window boundary. When the limit is
   * reached this may come before `until` (one expiring bucket may not free enough room).
   */
  readonly reset: number;
  /** When this limit alone has room for one more request (`now` if it has room already). */
  readonly until: number;
}

export interface RuleState {
  readonly limits: readonly LimitState[];
  /** Some limit is reached: refuse. */
  readonly reached: boolean;
  /** When every limit of the rule has room for one more request (`now` if none is reached). */
  readonly until: number;
}

/** Guards the determinism promise: whole-number times and costs make sums exact in any order. */
export function assertUsage(t: number, cost: number): void {
  if (!Number.isSafeInteger(t)) throw new RangeError(`event time must be a whole number of epoch ms, got ${String(t)}`);
  if (!Number.isSafeInteger(cost) || cost < 1) throw new RangeError(`cost must be a whole number >= 1, got ${String(cost)}`);
}

/** Adds an event of `cost` at time `t` to its bucket (mutates `buckets`). */
export function recordUsage(buckets: Buckets, bucketMs: number, t: number, cost = 1): void {
  assertUsage(t, cost);
  const b = Math.floor(t / bucketMs);
  buckets.set(b, (buckets.get(b) ?? 0) + cost);
}

/**
 * Drops buckets that can no longer count at `now` or later, in any window of `window`'s length and
 * bucket size (rolling or fixed): b <= floor(now / B) - n. Pass the longest window sharing these
 * buckets. Mutates `buckets`; returns how many buckets were dropped.
 */
export function pruneBuckets(buckets: Buckets, window: WindowSpec, now: number): number {
  const oldest = Math.floor(now / window.bucketMs) - window.lengthMs / window.bucketMs;
  let dropped = 0;
  for (const b of buckets.keys()) {
    if (b <= oldest) {
      buckets.delete(b);
      dropped++;
    }
  }
  return dropped;
}

/** The inclusive range [first, last] of bucket indexes the window counts at `now`. */
export function countedRange(window: WindowSpec, now: number): [number, number] {
  const n = window.lengthMs / window.bucketMs;
  const cur = Math.floor(now / window.bucketMs);
  if (window.kind === 'rolling') return [cur - n + 1, cur];
  const first = Math.floor(cur / n) * n;
  return [first, first + n - 1];
}

/** The window's count at `now` (see the module comment for rolling vs fixed). */
export function count(buckets: ReadonlyMap<number, number>, window: WindowSpec, now: number): number {
  const [first, last] = countedRange(window, now);
  let sum = 0;
  for (const [b, c] of buckets) if (b >= first && b <= last) sum += c;
  return sum;
}

/**
 * When the window next counts less (for `X-RateLimit-Reset`). Rolling: the oldest counted bucket
 * expires at (b + n) * B, or `now` when nothing is counted (the whole limit is already available);
 * fixed: the next window boundary, always.
 */
export function resetTime(buckets: ReadonlyMap<number, number>, window: WindowSpec, now: number): number {
  const [first, last] = countedRange(window, now);
  if (window.kind === 'fixed') return (last + 1) * window.bucketMs;
  let oldest = Infinity;
  for (const [b, c] of buckets) if (c !== 0 && b >= first && b <= last && b < oldest) oldest = b;
  return oldest === Infinity ? now : (oldest + window.lengthMs / window.bucketMs) * window.bucketMs;
}

/**
 * The earliest T >= now at which, if nothing more is admitted, count(T) + cost <= limit: `now` if
 * there is room already; rolling: an instant (b + n) * B when bucket b stops counting; fixed: a window
 * boundary. Buckets after `now` (events ahead of the caller's clock) are taken into account: they
 * count once T reaches them. `Infinity` when cost > limit (the request can never fit).
 */
export function until(buckets: ReadonlyMap<number, number>, window: WindowSpec, limit: number, now: number, cost = 1): number {
  const room = limit - cost; // there is room when count <= room
  if (count(buckets, window, now) <= room) return now;
  if (room < 0) return Infinity;
  const B = window.bucketMs;
  const n = window.lengthMs / B;
  const cur = Math.floor(now / B);

  if (window.kind === 'fixed') {
    // Later windows only hold events ahead of `now`; the first one without enough of them has room.
    const current = Math.floor(cur / n);
    const later = new Map<number, number>();
    for (const [b, c] of buckets) {
      const w = Math.floor(b / n);
      if (w > current) later.set(w, (later.get(w) ?? 0) + c);
    }
    let next = current + 1;
    while ((later.get(next) ?? 0) > room) next++;
    return next * window.lengthMs;
  }

  // count(k) for bucket k > cur changes only when a bucket enters (k = b) or leaves (k = b + n), and
  // room can only appear when one leaves, so the candidates are b + n, in order; a two-pointer sweep
  // keeps the sum over (k - n, k].
  const live: number[] = [];
  for (const [b, c] of buckets) if (c !== 0 && b > cur - n) live.push(b);
  live.sort((a, b) => a - b);
  let lo = 0;
  let hi = 0;
  let sum = 0;
  for (const b of live) {
    const k = b + n;
    while (hi < live.length && live[hi]! <= k) sum += buckets.get(live[hi++]!)!;
    while (live[lo]! <= k - n) sum -= buckets.get(live[lo++]!)!;
    if (sum <= room) return k * B;
  }
  return Infinity; // unreachable: after the last bucket leaves the count is 0 <= room
}

/** Count, reached, remaining, reset and until of one limit at `now`. */
export function limitState(buckets: ReadonlyMap<number, number>, window: WindowSpec, limit: number, now: number): LimitState {
  const c = count(buckets, window, now);
  return {
    limit,
    window,
    count: c,
    reached: c >= limit,
    remaining: Math.max(0, limit - c),
    reset: resetTime(buckets, window, now),
    until: c >= limit ? until(buckets, window, limit, now) : now,
  };
}

/**
 * The earliest T >= now at which every limit has room for `cost` at once. Each limit's own `until`
 * is a lower bound, so this starts at their max and re-checks from there: when nothing is counted
 * ahead of `now` (counts only fall) the first max is the answer, i.e. the max over the reached limits.
 */
export function jointUntil(size: number, untilFrom: (i: number, from: number) => number, now: number): number {
  let t = now;
  for (;;) {
    let next = t;
    for (let i = 0; i < size; i++) {
      const u = untilFrom(i, t);
      if (u > next) next = u;
    }
    if (next === t || next === Infinity) return next;
    t = next;
  }
}

/** When every limit of a rule has room for `cost` (`now` if they all have room). */
export function ruleUntil(limits: readonly CountedLimit[], now: number, cost = 1): number {
  return jointUntil(
    limits.length,
    (i, from) => {
      const l = limits[i]!;
      return until(l.buckets, l.window, l.limit, from, cost);
    },
    now,
  );
}

/** Every limit's state, and the rule's verdict: refuse while any limit is reached, until `until`. */
export function ruleState(limits: readonly CountedLimit[], now: number): RuleState {
  const states = limits.map((l) => limitState(l.buckets, l.window, l.limit, now));
  const reached = states.some((s) => s.reached);
  return { limits: states, reached, until: reached ? ruleUntil(limits, now) : now };
}
