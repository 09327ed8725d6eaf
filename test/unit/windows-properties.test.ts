/**
 * Property tests: the bucketed windows against a brute-force log of (t, cost), on small windows
 * (B in 1..50 ms, n in 1..20 buckets) so every instant can be checked one ms at a time.
 *
 * The inequality proved for rolling windows (events at or before `now`, L = lengthMs, B = bucketMs):
 *   log(now - L + B - 1, now]  <=  count(now)  <=  log(now - L, now]
 * with equality at the last ms of each bucket (now = k*B - 1). The exact identity behind it, for any
 * events (also those after `now`): count(now) = log[bucketStart(now) + B - L, bucketStart(now) + B).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { QuotaflowError } from '../../src/errors.ts';
import {
  CounterLayout,
  MAX_BUCKETS_PER_WINDOW,
  RollingCounter,
  count,
  defaultBucketMs,
  formatDuration,
  lateness,
  parseDuration,
  pruneBuckets,
  recordUsage,
  resetTime,
  ruleState,
  ruleUntil,
  until,
  windowSpec,
} from '../../src/windows/index.ts';
import type { Buckets, CountedLimit, WindowKind, WindowLimit, WindowSpec } from '../../src/windows/index.ts';

interface Usage {
  t: number;
  cost: number;
}

// ---- brute force: a plain log of events ----

/** Total cost of events with from < t <= to. */
function logSum(log: readonly Usage[], from: number, to: number): number {
  let sum = 0;
  for (const e of log) if (e.t > from && e.t <= to) sum += e.cost;
  return sum;
}

/** The bucketed window's count at T, written as a time range over the log. */
function bruteCount(log: readonly Usage[], w: WindowSpec, T: number): number {
  if (w.kind === 'fixed') {
    const start = Math.floor(T / w.lengthMs) * w.lengthMs;
    return logSum(log, start - 1, start + w.lengthMs - 1);
  }
  const bucketEnd = (Math.floor(T / w.bucketMs) + 1) * w.bucketMs; // exclusive
  return logSum(log, bucketEnd - w.lengthMs - 1, bucketEnd - 1);
}

function bucketsOf(log: readonly Usage[], w: WindowSpec): Buckets {
  const buckets: Buckets = new Map();
  for (const e of log) recordUsage(buckets, w.bucketMs, e.t, e.cost);
  return buckets;
}

// ---- generators ----

const kinds: readonly WindowKind[] = ['rolling', 'fixed'];

function arbWindow(kind?: WindowKind): fc.Arbitrary<WindowSpec> {
  return fc
    .record({
      bucketMs: fc.integer({ min: 1, max: 50 }),
      n: fc.integer({ min: 1, max: 20 }),
      kind: kind === undefined ? fc.constantFrom(...kinds) : fc.constant(kind),
    })
    .map(({ bucketMs, n, kind: k }) => windowSpec(bucketMs * n, { bucketMs, kind: k }));
}

/** Epoch ms around which a scenario happens: small, negative (before 1970) or today-sized. */
const arbBase = fc.oneof(fc.integer({ min: -100_000, max: 100_000 }), fc.integer({ min: 1_600_000_000_000, max: 1_900_000_000_000 }));

/** Events over ~4 windows, in arbitrary (out-of-order) arrival order. */
function arbLog(base: number, spanMs: number): fc.Arbitrary<Usage[]> {
  return fc.array(fc.record({ t: fc.integer({ min: base, max: base + spanMs }), cost: fc.integer({ min: 1, max: 4 }) }), { maxLength: 60, size: 'max' });
}

interface Scenario {
  window: WindowSpec;
  log: Usage[];
  now: number;
  limit: number;
  cost: number;
}

function arbScenario(kind?: WindowKind): fc.Arbitrary<Scenario> {
  return fc.tuple(arbWindow(kind), arbBase).chain(([window, base]) =>
    fc.record({
      window: fc.constant(window),
      log: arbLog(base, 4 * window.lengthMs),
      now: fc.integer({ min: base, max: base + 4 * window.lengthMs }),
      limit: fc.integer({ min: 1, max: 30 }),
      cost: fc.integer({ min: 1, max: 5 }),
    }),
  );
}

const RUNS = 500;

describe('rolling count vs a sliding log', () => {
  it('equals the log over (now - L, now] at the last ms of every bucket', () => {
    fc.assert(
      fc.property(arbScenario('rolling'), ({ window, log, now }) => {
        const end = (Math.floor(now / window.bucketMs) + 1) * window.bucketMs - 1;
        assert.equal(count(bucketsOf(log, window), window, end), logSum(log, end - window.lengthMs, end));
      }),
      { numRuns: RUNS },
    );
  });

  it('log(now - L + B - 1, now] <= count(now) <= log(now - L, now] for events up to now', () => {
    fc.assert(
      fc.property(arbScenario('rolling'), ({ window, log, now }) => {
        const past = log.filter((e) => e.t <= now);
        const c = count(bucketsOf(past, window), window, now);
        assert.ok(logSum(past, now - window.lengthMs + window.bucketMs - 1, now) <= c, 'count below the short log');
        assert.ok(c <= logSum(past, now - window.lengthMs, now), 'count above the sliding log');
      }),
      { numRuns: RUNS },
    );
  });

  it('is the log over [bucketStart + B - L, bucketStart + B) for any events, in any arrival order', () => {
    fc.assert(
      fc.property(arbScenario(), ({ window, log, now }) => {
        const buckets = bucketsOf(log, window);
        assert.deepEqual(
          buckets,
          bucketsOf(
            [...log].sort((a, b) => a.t - b.t || a.cost - b.cost),
            window,
          ),
        );
        assert.equal(count(buckets, window, now), bruteCount(log, window, now));
      }),
      { numRuns: RUNS },
    );
  });
});

describe('fixed count vs the log', () => {
  it('counts the events in [floor(now/L)*L, +L) and resets at the next boundary', () => {
    fc.assert(
      fc.property(arbScenario('fixed'), ({ window, log, now }) => {
        const start = Math.floor(now / window.lengthMs) * window.lengthMs;
        const buckets = bucketsOf(log, window);
        assert.equal(count(buckets, window, now), logSum(log, start - 1, start + window.lengthMs - 1));
        assert.equal(resetTime(buckets, window, now), start + window.lengthMs);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('until', () => {
  it('is the true earliest instant with room for `cost` (checked every ms)', () => {
    let reached = 0;
    fc.assert(
      fc.property(arbScenario(), ({ window, log, now, limit, cost }) => {
        const u = until(bucketsOf(log, window), window, limit, now, cost);
        if (u === Infinity) {
          assert.ok(cost > limit, 'Infinity only when the cost can never fit');
          return;
        }
        assert.ok(Number.isSafeInteger(u) && u >= now);
        if (u > now) reached++;
        for (let T = now; T < u; T++) assert.ok(bruteCount(log, window, T) + cost > limit, `room already at ${T} < until ${u}`);
        assert.ok(bruteCount(log, window, u) + cost <= limit, `no room at until ${u}`);
        if (window.kind === 'fixed' && u > now) assert.ok(u % window.lengthMs === 0, 'fixed: a window boundary');
        if (window.kind === 'rolling' && u > now) assert.ok(u % window.bucketMs === 0, 'rolling: a bucket boundary');
      }),
      { numRuns: RUNS },
    );
    // Guards the generators: a good share of the scenarios must actually have to wait.
    assert.ok(reached > RUNS / 4, `too few scenarios reach their limit (${reached} of ${RUNS})`);
  });

  it('for a rule is the earliest instant when every limit has room, and the max of theirs when nothing lies ahead', () => {
    let waited = 0;
    const arb = fc.tuple(arbWindow(), arbWindow(), arbBase).chain(([w1, w2, base]) => {
      const span = 4 * Math.max(w1.lengthMs, w2.lengthMs);
      return fc.record({
        limits: fc.tuple(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 60 })).map(([l1, l2]): WindowLimit[] => [
          { limit: l1, window: w1 },
          { limit: l2, window: w2 },
        ]),
        log: arbLog(base, span),
        now: fc.integer({ min: base, max: base + span + w1.lengthMs }),
        cost: fc.integer({ min: 1, max: 3 }),
      });
    });
    fc.assert(
      fc.property(arb, ({ limits, log, now, cost }) => {
        const counted = (events: Usage[]): CountedLimit[] => limits.map((l) => ({ ...l, buckets: bucketsOf(events, l.window) }));
        const hasRoom = (T: number) => limits.every((l) => bruteCount(log, l.window, T) + cost <= l.limit);
        const u = ruleUntil(counted(log), now, cost);
        if (u === Infinity) {
          assert.ok(limits.some((l) => cost > l.limit));
          return;
        }
        for (let T = now; T < u; T++) assert.ok(!hasRoom(T), `room at ${T} < until ${u}`);
        assert.ok(hasRoom(u), `no room at until ${u}`);
        if (u > now) waited++;

        const past = log.filter((e) => e.t <= now);
        const each = counted(past).map((l) => until(l.buckets, l.window, l.limit, now, cost));
        assert.equal(ruleUntil(counted(past), now, cost), Math.max(...each));
      }),
      { numRuns: 200 },
    );
    assert.ok(waited > 200 / 4, `too few rules reach a limit (${waited} of 200)`);
  });
});

describe('reset', () => {
  it('rolling: the count holds until reset, then goes down (events up to now)', () => {
    fc.assert(
      fc.property(arbScenario('rolling'), ({ window, log, now }) => {
        const past = log.filter((e) => e.t <= now);
        const buckets = bucketsOf(past, window);
        const c = count(buckets, window, now);
        const r = resetTime(buckets, window, now);
        if (c === 0) return assert.equal(r, now);
        assert.ok(r > now);
        for (let T = now; T < r; T++) assert.equal(bruteCount(past, window, T), c);
        assert.ok(bruteCount(past, window, r) < c);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('pruning', () => {
  it('never changes a count at now or later', () => {
    fc.assert(
      fc.property(arbScenario(), fc.nat(100), ({ window, log, now }, later) => {
        const buckets = bucketsOf(log, window);
        const before = [0, later, window.lengthMs].map((d) => count(buckets, window, now + d));
        pruneBuckets(buckets, window, now);
        for (const b of buckets.keys()) assert.ok(b > Math.floor(now / window.bucketMs) - window.lengthMs / window.bucketMs);
        assert.deepEqual(
          [0, later, window.lengthMs].map((d) => count(buckets, window, now + d)),
          before,
        );
      }),
      { numRuns: RUNS },
    );
  });
});

describe('RollingCounter agrees with the pure functions', () => {
  const arb = fc.tuple(arbWindow(), arbWindow(), arbBase).chain(([w1, w2, base]) => {
    const longest = Math.max(w1.lengthMs, w2.lengthMs);
    const span = 2 * longest;
    return fc.record({
      limits: fc.tuple(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 40 })).map(([l1, l2]): WindowLimit[] => [
        { limit: l1, window: w1 },
        { limit: l2, window: w2 },
      ]),
      log: arbLog(base, span),
      after: fc.oneof(fc.constant(0), fc.nat(longest)),
      aheadMs: fc.oneof(fc.constant(0), fc.nat(2 * longest)),
      before: fc.nat(2 * longest),
      cost: fc.integer({ min: 1, max: 3 }),
    });
  });

  it('at any now no more than aheadMs before the newest event, whatever the arrival order', () => {
    let reached = 0;
    let ahead = 0;
    fc.assert(
      fc.property(arb, ({ limits, log, after, aheadMs, before, cost }) => {
        const counter = new RollingCounter(
          new CounterLayout(
            limits.map((l) => l.window),
            { aheadMs },
          ),
        );
        for (const e of log) counter.add(e.t, e.cost);
        // now in [newest - aheadMs, newest + longest window]: events ahead of now are allowed.
        const now = (log.length === 0 ? 0 : Math.max(...log.map((e) => e.t))) + (after > 0 ? after : -Math.min(before, aheadMs));
        if (log.some((e) => e.t > now)) ahead++;
        const counted: CountedLimit[] = limits.map((l) => ({ ...l, buckets: bucketsOf(log, l.window) }));
        for (const l of counted) assert.equal(counter.count(l.window, now), count(l.buckets, l.window, now));
        const state = counter.state(limits, now);
        if (state.reached) reached++;
        assert.deepEqual(state, ruleState(counted, now));
        assert.equal(counter.until(limits, now, cost), ruleUntil(counted, now, cost));
        // The ring holds exactly the pure buckets the longest window at that bucket size still needs.
        const last = Math.max(...log.map((e) => e.t), Number.NEGATIVE_INFINITY);
        for (const l of counted) {
          const r = counter.layout.ringOf(l.window);
          const ring = windowSpec(counter.layout.ringSize[r]! * l.window.bucketMs, { bucketMs: l.window.bucketMs });
          const expected = new Map(l.buckets);
          if (log.length > 0) pruneBuckets(expected, ring, last);
          assert.deepEqual(counter.buckets(l.window), expected);
        }
      }),
      { numRuns: RUNS },
    );
    assert.ok(reached > RUNS / 5, `too few counters reach a limit (${reached} of ${RUNS})`);
    assert.ok(ahead > RUNS / 10, `too few scenarios with events ahead of now (${ahead} of ${RUNS})`);
  });

  it('admitting in time order, as a gateway would, after every event', () => {
    let refused = 0;
    fc.assert(
      fc.property(arb, ({ limits, log }) => {
        const counter = new RollingCounter(limits.map((l) => l.window));
        const admitted: Usage[] = [];
        for (const e of [...log].sort((a, b) => a.t - b.t)) {
          const counted: CountedLimit[] = limits.map((l) => ({ ...l, buckets: bucketsOf(admitted, l.window) }));
          const state = counter.state(limits, e.t);
          assert.deepEqual(state, ruleState(counted, e.t));
          if (!state.reached) {
            counter.add(e.t, e.cost);
            admitted.push(e);
          } else refused++;
        }
      }),
      { numRuns: 100 },
    );
    assert.ok(refused > 100, `too few refusals (${refused})`);
  });
});

describe('RollingCounter running sums (windowCount)', () => {
  const arb = fc.tuple(arbWindow(), arbWindow(), arbBase).chain(([w1, w2, base]) => {
    const longest = Math.max(w1.lengthMs, w2.lengthMs);
    return fc.record({
      windows: fc.constant([w1, w2]),
      log: arbLog(base, 3 * longest),
      aheadMs: fc.oneof(fc.constant(0), fc.nat(2 * longest)),
      // Some events are stored buckets loaded from Redis instead of added, as after a reload.
      loaded: fc.array(fc.boolean(), { minLength: 60, maxLength: 60 }),
      probes: fc.array(fc.integer({ min: -longest, max: longest }), { minLength: 3, maxLength: 3 }),
    });
  });

  it('equal the summed buckets after every change, at the newest event and around it, whatever the order', () => {
    let fast = 0;
    fc.assert(
      fc.property(arb, ({ windows, log, aheadMs, loaded, probes }) => {
        const counter = new RollingCounter(new CounterLayout(windows, { aheadMs }));
        let newest = Number.NEGATIVE_INFINITY;
        for (const [k, e] of log.entries()) {
          if (loaded[k]) for (const w of windows) counter.loadBucket(w.bucketMs, Math.floor(e.t / w.bucketMs), e.cost);
          else counter.add(e.t, e.cost);
          newest = Math.max(newest, e.t);
          for (const now of [e.t, newest, ...probes.map((p) => newest + p)]) {
            for (const [i, w] of windows.entries()) {
              // (two windows of one bucket size share a ring: a loaded bucket counts once in it)
              assert.equal(counter.windowCount(i, now), counter.count(w, now), `window ${i} at ${now} after event ${k}`);
              if (now === newest) fast++;
            }
          }
        }
        if (log.length === 0) return;
        // A counter carried over to other limits (an override) sums right too.
        const next = new RollingCounter(new CounterLayout([windows[1]!]));
        next.carryFrom(counter);
        assert.equal(next.windowCount(0, newest), next.count(windows[1]!, newest));
      }),
      { numRuns: RUNS },
    );
    assert.ok(fast > RUNS, `the O(1) path was taken ${fast} times`);
  });
});

describe('lateness', () => {
  it('late exactly when the event can no longer count at the watermark or after', () => {
    fc.assert(
      fc.property(arbScenario(), fc.integer({ min: 1, max: 20 }), ({ window, log, now: watermark }, extra) => {
        const past = log.filter((e) => e.t <= watermark);
        fc.pre(past.length > 0);
        const late = past.filter((e) => lateness(e.t, { watermark, longestWindowMs: window.lengthMs, bucketMs: window.bucketMs, futureSkewMs: 0 }) === 'late');
        const onTime = past.filter((e) => !late.includes(e));
        const all = bucketsOf(past, window);
        const kept = bucketsOf(onTime, window);
        for (const T of [watermark, watermark + extra, watermark + window.lengthMs]) {
          assert.equal(count(kept, window, T), count(all, window, T));
        }
        // A counter that has seen the watermark refuses exactly the late events.
        const counter = new RollingCounter([window]);
        counter.add(watermark);
        for (const e of past) assert.equal(counter.add(e.t, e.cost), !late.includes(e));
      }),
      { numRuns: RUNS },
    );
  });

  it('future only beyond the skew tolerance', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1e12 }), fc.integer({ min: -1000, max: 1000 }), fc.nat(500), (now, dt, skew) => {
        const timing = lateness(now + dt, { watermark: now, longestWindowMs: 60_000, futureSkewMs: skew });
        assert.equal(timing === 'future', dt > skew);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('durations and specs', () => {
  it('formatDuration and parseDuration round-trip', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1e13 }), (ms) => assert.equal(parseDuration(formatDuration(ms)), ms)),
      { numRuns: RUNS },
    );
  });

  it('the default bucket is the largest divisor of the window at most window/60 (at least 1ms)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20_000 }), (lengthMs) => {
        const b = defaultBucketMs(lengthMs);
        let best = 1;
        for (let d = 1; d <= lengthMs / 60; d++) if (lengthMs % d === 0) best = d;
        assert.equal(b, best);
        // A window with no fitting divisor (13291ms is prime) would need too many 1ms buckets.
        if (lengthMs / b <= MAX_BUCKETS_PER_WINDOW) assert.equal(windowSpec(lengthMs).bucketMs, b);
        else
          assert.throws(
            () => windowSpec(lengthMs),
            (e) => e instanceof QuotaflowError && e.code === 'CONFIG_INVALID',
          );
      }),
      { numRuns: RUNS },
    );
  });
});
