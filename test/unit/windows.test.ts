import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { QuotaflowError } from '../../src/errors.ts';
import {
  CounterLayout,
  RollingCounter,
  count,
  formatDuration,
  lateness,
  limitState,
  parseDuration,
  pruneBuckets,
  recordUsage,
  resetTime,
  ruleState,
  ruleUntil,
  until,
  windowSpec,
} from '../../src/windows/index.ts';
import type { Buckets, WindowLimit, WindowSpec } from '../../src/windows/index.ts';

const SECOND = 1_000;
const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
/** A UTC hour boundary, so minute and hour buckets both start here. */
const T0 = Date.UTC(2024, 0, 15, 10, 0, 0);

function isConfigInvalid(e: unknown): boolean {
  return e instanceof QuotaflowError && e.code === 'CONFIG_INVALID';
}

describe('parseDuration', () => {
  const valid: Array<[string, number]> = [
    ['60s', 60 * SECOND],
    ['1m', MINUTE],
    ['1h', HOUR],
    ['1d', DAY],
    ['500ms', 500],
    ['90s', 90 * SECOND],
    ['1ms', 1],
    ['7d', 7 * DAY],
    [' 5m ', 5 * MINUTE],
  ];
  for (const [text, ms] of valid) {
    it(`${JSON.stringify(text)} is ${ms} ms`, () => assert.equal(parseDuration(text), ms));
  }

  const invalid = ['0s', '0ms', '-1s', '1.5h', '60', 'abc', '', 'm', '1 h', '1w', '1H', '1h30m', '+5s', '99999999999999999d'];
  for (const text of invalid) {
    it(`${JSON.stringify(text)} is refused with CONFIG_INVALID`, () => {
      assert.throws(() => parseDuration(text), isConfigInvalid);
    });
  }

  it('says what to write instead', () => {
    try {
      parseDuration('1.5h');
      assert.fail('expected an error');
    } catch (e) {
      assert.ok(e instanceof QuotaflowError);
      assert.match(e.describe(), /90m/);
    }
  });
});

describe('formatDuration', () => {
  const cases: Array<[number, string]> = [
    [DAY, '1d'],
    [HOUR, '1h'],
    [MINUTE, '1m'],
    [90 * SECOND, '90s'],
    [90 * MINUTE, '90m'],
    [500, '500ms'],
    [1_500, '1500ms'],
    [0, '0ms'],
  ];
  for (const [ms, text] of cases) {
    it(`${ms} ms is ${text}`, () => {
      assert.equal(formatDuration(ms), text);
      if (ms > 0) assert.equal(parseDuration(text), ms);
    });
  }
  for (const bad of [-1, 1.5, Number.NaN, Infinity]) {
    it(`refuses ${bad}`, () => assert.throws(() => formatDuration(bad), isConfigInvalid));
  }
});

describe('windowSpec', () => {
  const valid: Array<[string, WindowSpec, WindowSpec]> = [
    ['1m: 60 one-second buckets', windowSpec('1m'), { lengthMs: MINUTE, bucketMs: SECOND, kind: 'rolling' }],
    ['1h: one-minute buckets', windowSpec(HOUR), { lengthMs: HOUR, bucketMs: MINUTE, kind: 'rolling' }],
    ['1d fixed: 24-minute buckets', windowSpec('1d', { kind: 'fixed' }), { lengthMs: DAY, bucketMs: 24 * MINUTE, kind: 'fixed' }],
    ['explicit bucket size', windowSpec('1m', { bucketMs: '5s' }), { lengthMs: MINUTE, bucketMs: 5 * SECOND, kind: 'rolling' }],
    ['bucket = window', windowSpec('1h', { bucketMs: HOUR }), { lengthMs: HOUR, bucketMs: HOUR, kind: 'rolling' }],
    // lengthMs / 60 not whole: the largest divisor of lengthMs below it.
    ['500ms: 5ms buckets (500/60 = 8.3)', windowSpec('500ms'), { lengthMs: 500, bucketMs: 5, kind: 'rolling' }],
    ['90ms: 1ms buckets (90/60 = 1.5)', windowSpec(90), { lengthMs: 90, bucketMs: 1, kind: 'rolling' }],
    ['61s: 1s buckets (1016.7ms → 1000)', windowSpec('61s'), { lengthMs: 61 * SECOND, bucketMs: SECOND, kind: 'rolling' }],
    ['30ms: 1ms buckets, only 30 of them', windowSpec(30), { lengthMs: 30, bucketMs: 1, kind: 'rolling' }],
    ['97ms (prime): 1ms buckets', windowSpec(97), { lengthMs: 97, bucketMs: 1, kind: 'rolling' }],
  ];
  for (const [name, got, want] of valid) {
    it(name, () => assert.deepEqual({ ...got }, want));
  }

  const invalid: Array<[string, () => unknown]> = [
    ['zero length', () => windowSpec(0)],
    ['negative length', () => windowSpec(-MINUTE)],
    ['fractional length', () => windowSpec(1.5)],
    ['junk duration', () => windowSpec('soon')],
    ['bucket does not divide the window', () => windowSpec('1m', { bucketMs: 7 * SECOND })],
    ['bucket longer than the window', () => windowSpec('1m', { bucketMs: '2m' })],
    ['zero bucket', () => windowSpec('1m', { bucketMs: 0 })],
    ['too many buckets', () => windowSpec('1d', { bucketMs: 1 })],
    ['unknown kind', () => windowSpec('1m', { kind: 'sliding' as never })],
  ];
  for (const [name, make] of invalid) {
    it(`refuses: ${name}`, () => assert.throws(make, isConfigInvalid));
  }
});

/** What a gateway does with a fresh decision per request: admit while no limit is reached. */
function admit(counter: RollingCounter, limits: readonly WindowLimit[], t: number): boolean {
  if (counter.state(limits, t).reached) return false;
  counter.add(t);
  return true;
}

describe('limits', () => {
  const minute = windowSpec('1m');
  const hour = windowSpec('1h');
  const perMinute: WindowLimit[] = [{ limit: 60, window: minute }];

  it('60 per minute: the 60th request is admitted, the 61st refused', () => {
    const counter = new RollingCounter([minute]);
    const outcomes = Array.from({ length: 61 }, (_, i) => admit(counter, perMinute, T0 + i * 500));
    assert.deepEqual(outcomes.slice(0, 60), Array(60).fill(true));
    assert.equal(outcomes[60], false);
    const state = counter.state(perMinute, T0 + 30_000);
    assert.equal(state.limits[0]!.count, 60);
    assert.equal(state.limits[0]!.remaining, 0);
    assert.equal(state.reached, true);
    // The first bucket (T0's second) stops counting one minute later: that frees room.
    assert.equal(state.until, T0 + MINUTE);
    assert.equal(counter.count(minute, T0 + MINUTE - 1), 60);
    assert.equal(counter.count(minute, T0 + MINUTE), 58); // requests at T0 and T0+500 left
  });

  it('the same with the pure functions over buckets', () => {
    const buckets: Buckets = new Map();
    for (let i = 0; i < 59; i++) recordUsage(buckets, minute.bucketMs, T0 + i * 500);
    assert.equal(limitState(buckets, minute, 60, T0 + 30_000).reached, false); // room for the 60th
    recordUsage(buckets, minute.bucketMs, T0 + 29_500);
    const s = limitState(buckets, minute, 60, T0 + 30_000);
    assert.deepEqual(
      { count: s.count, reached: s.reached, remaining: s.remaining, until: s.until, reset: s.reset },
      { count: 60, reached: true, remaining: 0, until: T0 + MINUTE, reset: T0 + MINUTE },
    );
  });

  it('60/min and 1800/h: the hour refuses while the minute has room', () => {
    const limits: WindowLimit[] = [
      { limit: 60, window: minute },
      { limit: 1800, window: hour },
    ];
    const counter = new RollingCounter(new CounterLayout([minute, hour]));
    // 1800 requests over 40 minutes: 45 a minute, never 60 in any minute.
    for (let i = 0; i < 1800; i++) assert.equal(admit(counter, limits, T0 + Math.floor((i * 40 * MINUTE) / 1800)), true);

    const now = T0 + 40 * MINUTE;
    const state = counter.state(limits, now);
    const [m, h] = state.limits;
    assert.equal(m!.reached, false);
    assert.ok(m!.count <= 60 && m!.count > 0, `minute count ${m!.count}`);
    assert.equal(m!.until, now);
    assert.equal(h!.count, 1800);
    assert.equal(h!.reached, true);
    assert.equal(state.reached, true);
    assert.equal(admit(counter, limits, now), false);
    // The first minute's 45 requests stop counting at T0 + 60m: 1755 < 1800.
    assert.equal(state.until, T0 + HOUR);
    assert.equal(h!.until, T0 + HOUR);
    assert.equal(counter.state(limits, T0 + HOUR - 1).reached, true);
    assert.equal(counter.state(limits, T0 + HOUR).reached, false);
    assert.equal(counter.count(hour, T0 + HOUR), 1755);

    // The pure functions agree.
    const pureLimits = limits.map((l) => ({ ...l, buckets: counter.buckets(l.window) }));
    assert.equal(ruleUntil(pureLimits, now), T0 + HOUR);
    assert.deepEqual(ruleState(pureLimits, now), state);
  });

  it('until is now when there is room already', () => {
    const buckets: Buckets = new Map();
    recordUsage(buckets, minute.bucketMs, T0, 10);
    assert.equal(until(buckets, minute, 60, T0 + 5_000), T0 + 5_000);
    assert.equal(until(new Map(), minute, 60, T0), T0);
    const counter = new RollingCounter([minute]);
    counter.add(T0, 10);
    assert.equal(counter.until(perMinute, T0 + 5_000), T0 + 5_000);
    assert.equal(counter.state(perMinute, T0 + 5_000).until, T0 + 5_000);
  });

  it('until for a cost waits for enough room', () => {
    const buckets: Buckets = new Map();
    recordUsage(buckets, minute.bucketMs, T0, 20);
    recordUsage(buckets, minute.bucketMs, T0 + 10_000, 30);
    // count 50 of 60: room for 10 now, for 30 once the first 20 expire, for 60 once all expire.
    assert.equal(until(buckets, minute, 60, T0 + 20_000, 10), T0 + 20_000);
    assert.equal(until(buckets, minute, 60, T0 + 20_000, 11), T0 + MINUTE);
    assert.equal(until(buckets, minute, 60, T0 + 20_000, 30), T0 + MINUTE);
    assert.equal(until(buckets, minute, 60, T0 + 20_000, 31), T0 + MINUTE + 10_000);
    assert.equal(until(buckets, minute, 60, T0 + 20_000, 60), T0 + MINUTE + 10_000);
    assert.equal(until(buckets, minute, 60, T0 + 20_000, 61), Infinity); // never fits
    const counter = new RollingCounter([minute]);
    counter.add(T0, 20);
    counter.add(T0 + 10_000, 30);
    assert.equal(counter.until(perMinute, T0 + 20_000, 30), T0 + MINUTE);
    assert.equal(counter.until(perMinute, T0 + 20_000, 31), T0 + MINUTE + 10_000);
  });

  it('a limit of 0 never has room', () => {
    assert.equal(until(new Map(), minute, 0, T0), Infinity);
    assert.equal(new RollingCounter([minute]).state([{ limit: 0, window: minute }], T0).until, Infinity);
  });
});

describe('rolling windows are exact to the bucket', () => {
  const minute = windowSpec('1m');

  it('an event counts from its time until its bucket leaves the window', () => {
    const buckets: Buckets = new Map();
    recordUsage(buckets, minute.bucketMs, T0 + 700); // in the bucket [T0, T0 + 1s)
    assert.equal(count(buckets, minute, T0 + 699), 1); // its bucket is the current one
    assert.equal(count(buckets, minute, T0 + MINUTE - 1), 1);
    // At T0 + 60s its bucket leaves, 300ms before a sliding log would drop it (60s - 700ms later).
    assert.equal(count(buckets, minute, T0 + MINUTE), 0);
    assert.equal(resetTime(buckets, minute, T0 + 5_000), T0 + MINUTE);
  });

  it('reset is when the oldest counted bucket expires, or now when nothing counts', () => {
    const buckets: Buckets = new Map();
    recordUsage(buckets, minute.bucketMs, T0 + 2_500);
    recordUsage(buckets, minute.bucketMs, T0 + 30_000);
    assert.equal(resetTime(buckets, minute, T0 + 40_000), T0 + 2_000 + MINUTE);
    assert.equal(resetTime(buckets, minute, T0 + 62_000), T0 + 30_000 + MINUTE);
    assert.equal(resetTime(buckets, minute, T0 + 95_000), T0 + 95_000);
  });

  it('pruning drops only buckets that can no longer count', () => {
    const buckets: Buckets = new Map();
    for (let s = 0; s < 120; s++) recordUsage(buckets, minute.bucketMs, T0 + s * SECOND);
    const now = T0 + 119 * SECOND + 500;
    const before = count(buckets, minute, now);
    assert.equal(pruneBuckets(buckets, minute, now), 60);
    assert.equal(buckets.size, 60);
    assert.equal(count(buckets, minute, now), before);
  });
});

describe('fixed windows', () => {
  const day = windowSpec('1d', { kind: 'fixed' });
  const perDay: WindowLimit[] = [{ limit: 1000, window: day }];

  it('1d resets at UTC midnight', () => {
    const midnight = Date.UTC(2024, 2, 10);
    const counter = new RollingCounter([day]);
    for (let i = 0; i < 1000; i++) assert.equal(admit(counter, perDay, midnight + i * 50_000), true);
    const now = Date.UTC(2024, 2, 10, 15, 30);
    const state = counter.state(perDay, now);
    assert.equal(state.reached, true);
    assert.equal(state.limits[0]!.reset, Date.UTC(2024, 2, 11));
    assert.equal(state.until, Date.UTC(2024, 2, 11));
    assert.equal(counter.count(day, Date.UTC(2024, 2, 10, 23, 59, 59, 999)), 1000);
    assert.equal(counter.count(day, Date.UTC(2024, 2, 11)), 0);
    assert.equal(admit(counter, perDay, Date.UTC(2024, 2, 11)), true);
  });

  it('an event one ms before midnight counts in the old day only', () => {
    const buckets: Buckets = new Map();
    recordUsage(buckets, day.bucketMs, Date.UTC(2024, 2, 10, 23, 59, 59, 999));
    assert.equal(count(buckets, day, Date.UTC(2024, 2, 10, 12)), 1);
    assert.equal(count(buckets, day, Date.UTC(2024, 2, 11)), 0);
    assert.equal(resetTime(buckets, day, Date.UTC(2024, 2, 10, 12)), Date.UTC(2024, 2, 11));
  });

  it('until is the next boundary, or now with room', () => {
    const buckets: Buckets = new Map();
    recordUsage(buckets, day.bucketMs, Date.UTC(2024, 2, 10, 1), 5);
    const now = Date.UTC(2024, 2, 10, 9);
    assert.equal(until(buckets, day, 5, now), Date.UTC(2024, 2, 11));
    assert.equal(until(buckets, day, 6, now), now);
  });

  it('a rolling day does not reset at midnight', () => {
    const rollingDay = windowSpec('1d');
    const buckets: Buckets = new Map();
    recordUsage(buckets, rollingDay.bucketMs, Date.UTC(2024, 2, 10, 15, 30), 5);
    assert.equal(count(buckets, rollingDay, Date.UTC(2024, 2, 11, 1)), 5);
    // 24-minute buckets from UTC midnight: 15:30 is in the bucket [15:12, 15:36), which leaves a day later.
    assert.equal(until(buckets, rollingDay, 5, Date.UTC(2024, 2, 11, 1)), Date.UTC(2024, 2, 11, 15, 12));
  });
});

describe('RollingCounter', () => {
  const minute = windowSpec('1m');

  it('ignores events too old for every window and says so', () => {
    const counter = new RollingCounter([minute]);
    assert.equal(counter.add(T0 + 2 * MINUTE), true);
    assert.equal(counter.add(T0 + MINUTE + 1_000), true); // the oldest bucket the minute still counts
    assert.equal(counter.add(T0 + MINUTE + 999), false); // its bucket left the window at T0 + 2m
    assert.equal(counter.count(minute, T0 + 2 * MINUTE), 2);
  });

  it('keeps aheadMs more buckets, so events ahead of now do not push out what now counts', () => {
    const now = T0 + MINUTE - 1;
    const fill = (counter: RollingCounter) => {
      for (let s = 0; s < 60; s++) counter.add(T0 + s * SECOND);
      counter.add(now + 5 * SECOND); // 5s ahead of now, within the skew the aggregator accepts
    };
    const plain = new RollingCounter([minute]);
    fill(plain);
    assert.equal(plain.count(minute, now), 55); // buckets T0 .. T0+4s were overwritten
    const ahead = new RollingCounter(new CounterLayout([minute], { aheadMs: 5 * SECOND }));
    fill(ahead);
    assert.equal(ahead.count(minute, now), 60);
    assert.equal(ahead.layout.slots, 1 + 60 + 5 + 2); // top, buckets, ahead buckets; the ring's sums flag and the window's running sum
    assert.throws(() => new CounterLayout([minute], { aheadMs: -1 }), isConfigInvalid);
  });

  it('refuses windows its layout does not keep', () => {
    const counter = new RollingCounter([minute]);
    assert.throws(() => counter.count(windowSpec('1h'), T0), isConfigInvalid);
    assert.throws(() => counter.count(windowSpec('2m', { bucketMs: '1s' }), T0), isConfigInvalid);
    assert.throws(() => new CounterLayout([]), isConfigInvalid);
  });

  it('shares one ring between windows with the same bucket size', () => {
    const layout = new CounterLayout([minute, windowSpec('2m', { bucketMs: '1s' }), windowSpec('1m', { kind: 'fixed' })]);
    assert.deepEqual(layout.ringSize, [120]);
    assert.equal(layout.slots, 1 + 120 + 1 + 3); // one ring (top and 120 buckets) and its sums flag, one running sum per window
  });

  it('refuses bad costs and times', () => {
    const counter = new RollingCounter([minute]);
    assert.throws(() => counter.add(T0, 0), RangeError);
    assert.throws(() => counter.add(T0, 1.5), RangeError);
    assert.throws(() => counter.add(T0 + 0.5), RangeError);
  });

  it('refuses to be asked about a time that is not finite, instead of walking buckets forever', () => {
    const limits: WindowLimit[] = [{ limit: 5, window: minute }];
    for (const filled of [false, true]) {
      const counter = new RollingCounter([minute]);
      if (filled) counter.add(T0);
      for (const now of [Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, Number.NaN]) {
        assert.throws(() => counter.count(minute, now), RangeError);
        assert.throws(() => counter.resetTime(minute, now), RangeError);
        assert.throws(() => counter.state(limits, now), RangeError);
        assert.throws(() => counter.until(limits, now), RangeError);
      }
    }
  });

  it('knows when it counts nothing any more', () => {
    const counter = new RollingCounter([minute, windowSpec('1h')]);
    assert.equal(counter.expiresAt, -Infinity);
    counter.add(T0 + 1_500);
    assert.equal(counter.expiresAt, T0 + HOUR);
  });
});

describe('lateness', () => {
  const bounds = { watermark: T0, longestWindowMs: HOUR, futureSkewMs: 5 * MINUTE };
  const cases: Array<[string, number, object, string]> = [
    ['at the watermark', T0, {}, 'on-time'],
    ['one window minus 1ms ago', T0 - HOUR + 1, {}, 'on-time'],
    ['exactly one window ago', T0 - HOUR, {}, 'late'],
    ['within the skew', T0 + 5 * MINUTE, {}, 'on-time'],
    ['beyond the skew', T0 + 5 * MINUTE + 1, {}, 'future'],
    ['beyond the skew of the injected clock', T0 + 6 * MINUTE, { now: T0 + 2 * MINUTE }, 'on-time'],
    // With 1m buckets, an event is late once its bucket left the hour at the watermark.
    ['bucketed: in the oldest bucket still counted', T0 - HOUR + MINUTE, { bucketMs: MINUTE }, 'on-time'],
    ['bucketed: in the bucket that just left', T0 - HOUR + MINUTE - 1, { bucketMs: MINUTE }, 'late'],
  ];
  for (const [name, t, extra, want] of cases) {
    it(name, () => assert.equal(lateness(t, { ...bounds, ...extra }), want));
  }
});

describe('RollingCounter.loadBucket restores stored buckets ring by ring', () => {
  it('a counter rebuilt from its per-size buckets counts exactly like the original', () => {
    const minute = windowSpec('60s');
    const hour = windowSpec('1h');
    const original = new RollingCounter([minute, hour]);
    const t0 = 1_700_000_000_000;
    for (let i = 0; i < 500; i++) original.add(t0 + i * 7_919, 1 + (i % 3));
    const restored = new RollingCounter([minute, hour]);
    for (const w of [minute, hour]) {
      for (const [b, c] of original.buckets(w)) assert.equal(restored.loadBucket(w.bucketMs, b, c), true);
    }
    const now = t0 + 499 * 7_919;
    for (const w of [minute, hour]) assert.equal(restored.count(w, now), original.count(w, now));
    assert.equal(restored.loadBucket(123, 1, 1), false, 'no ring of that size');
  });
});
