/** LocalCounts: this gateway's own admissions per counter, in the rule's rolling and fixed windows. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { compileOverride, compilePolicy, parsePolicyText, type CompiledLimit } from '../../../src/policy/index.ts';
import { LocalCounts } from '../../../src/gateway/local-counts.ts';

const POLICY = `
version: "lc1"
product: Local counts test
identity:
  user: {}
tenant: user
refusal: { message: no }
rules:
  - id: both
    default: true
    scope: user
    limits:
      - { limit: 3, window: 10s, resolution: 1s }
      - { limit: 5, window: 1m, kind: fixed }
  - id: rolling-only
    apis: [R]
    scope: user
    limits:
      - { limit: 2, window: 10s, resolution: 1s }
apis:
  - { name: R }
`;
const policy = compilePolicy(parsePolicyText(POLICY, 'local-counts.test'));
const limits: readonly CompiledLimit[] = policy.defaultRule!.limits;
const rollingOnly: readonly CompiledLimit[] = policy.rules.find((r) => r.id === 'rolling-only')!.limits;

const T = 1_711_108_860_000; // a whole minute: the fixed window starts here
const K = '{user=u}:both:user=u';

describe('LocalCounts', () => {
  test('a counter never seen counts zero, has reached nothing and has room now', () => {
    const lc = new LocalCounts();
    assert.deepEqual(lc.counts(K, limits, T), [
      { count: 0, reset: T },
      { count: 0, reset: T },
    ]);
    assert.equal(lc.reached(K, limits, T), -1);
    assert.equal(lc.until(K, limits, T), T);
    assert.equal(lc.size, 0, 'reading does not create counters');
  });

  test('rolling window: counts, reached and until follow the oldest admission out', () => {
    const lc = new LocalCounts();
    lc.add(K, limits, T);
    lc.add(K, limits, T + 1_000);
    assert.equal(lc.reached(K, limits, T + 1_000), -1);
    lc.add(K, limits, T + 2_000);
    const [rolling, fixed] = lc.counts(K, limits, T + 2_000);
    assert.deepEqual(rolling, { count: 3, reset: T + 10_000 }, 'the admission at T leaves the 10 s window at T + 10 s');
    assert.deepEqual(fixed, { count: 3, reset: T + 60_000 }, 'the fixed minute resets at the next whole minute');
    assert.equal(lc.reached(K, limits, T + 2_000), 0, 'the 3/10s limit is reached');
    assert.equal(lc.until(K, limits, T + 2_000), T + 10_000);
    assert.equal(lc.reached(K, limits, T + 9_999), 0);
    assert.equal(lc.reached(K, limits, T + 10_000), -1, 'room again when T leaves the window');
    assert.deepEqual(lc.counts(K, limits, T + 10_000)[0], { count: 2, reset: T + 11_000 });
  });

  test('fixed window: reached until the next whole minute, whatever the rolling window says', () => {
    const lc = new LocalCounts();
    for (const t of [T, T + 15_000, T + 30_000, T + 45_000]) lc.add(K, limits, t);
    assert.equal(lc.reached(K, limits, T + 50_000), -1, '4 of 5');
    lc.add(K, limits, T + 50_000);
    assert.equal(lc.counts(K, limits, T + 50_000)[1]!.count, 5);
    assert.equal(lc.counts(K, limits, T + 50_000)[0]!.count, 2, 'T + 45 s and T + 50 s in the last 10 s');
    assert.equal(lc.reached(K, limits, T + 50_000), 1, 'the 5/min fixed limit');
    assert.equal(lc.until(K, limits, T + 50_000), T + 60_000);
    assert.equal(lc.reached(K, limits, T + 59_999), 1);
    assert.equal(lc.reached(K, limits, T + 60_000), -1, 'a new minute');
    assert.deepEqual(lc.counts(K, limits, T + 60_000)[1], { count: 0, reset: T + 120_000 });
  });

  test('until is when every limit has room: the later of the two', () => {
    const lc = new LocalCounts();
    // Three at T + 55 s fill the rolling 3/10s (room at T + 65 s) and, with two earlier, the fixed 5/min (room at T + 60 s).
    lc.add(K, limits, T);
    lc.add(K, limits, T + 1_000);
    for (let i = 0; i < 3; i++) lc.add(K, limits, T + 55_000);
    assert.equal(lc.reached(K, limits, T + 55_000), 0);
    assert.equal(lc.until(K, limits, T + 55_000), T + 65_000);
  });

  test('cost counts several admissions at once', () => {
    const lc = new LocalCounts();
    lc.add(K, limits, T, 3);
    assert.equal(lc.counts(K, limits, T)[0]!.count, 3);
    assert.equal(lc.reached(K, limits, T), 0);
    assert.equal(lc.until(K, limits, T + 1_000), T + 10_000, 'room for one more when the 3 leave the rolling window');
    lc.add(K, limits, T + 20_000);
    assert.equal(lc.until(K, limits, T + 20_000, 1), T + 20_000, 'one more fits now (4 of 5 this minute)');
    assert.equal(lc.until(K, limits, T + 20_000, 2), T + 60_000, 'two fit only in the next fixed minute');
    assert.equal(lc.until(K, limits, T + 20_000, 4), Infinity, 'more than the 3/10s limit never fits');
    assert.equal(lc.until('unseen', limits, T, 4), Infinity, 'not even on a counter never seen');
    assert.equal(lc.until('unseen', limits, T, 3), T);
  });

  test('counters are independent', () => {
    const lc = new LocalCounts();
    for (let i = 0; i < 3; i++) lc.add('a', limits, T);
    assert.equal(lc.reached('a', limits, T), 0);
    assert.equal(lc.reached('b', limits, T), -1);
    assert.equal(lc.counts('b', limits, T)[0]!.count, 0);
  });

  test('sweep drops counters that count nothing any more and keeps the others', () => {
    const lc = new LocalCounts();
    lc.add('old', limits, T);
    lc.add('recent', limits, T + 90_000);
    assert.equal(lc.sweep(T + 30_000), 0, 'old still counts in both windows');
    assert.equal(lc.size, 2);
    assert.equal(lc.sweep(T + 120_000), 1);
    assert.equal(lc.size, 1);
    assert.equal(lc.counts('recent', limits, T + 95_000)[0]!.count, 1, 'the kept counter still counts');
    assert.equal(lc.sweep(T + 10 * 60_000), 1);
    assert.equal(lc.size, 0);
  });

  test('maxKeys bounds the counters: past it the oldest is forgotten (less strict, never stricter)', () => {
    const lc = new LocalCounts(2);
    for (let i = 0; i < 3; i++) lc.add('a', limits, T);
    lc.add('b', limits, T);
    lc.add('c', limits, T);
    assert.equal(lc.size, 2);
    assert.equal(lc.reached('a', limits, T), -1, 'a was the oldest: forgotten');
    assert.equal(lc.counts('a', limits, T)[0]!.count, 0);
    assert.equal(lc.counts('b', limits, T)[0]!.count, 1);
    assert.equal(lc.counts('c', limits, T)[0]!.count, 1);
    lc.add('c', limits, T);
    assert.equal(lc.size, 2, 'adding to a held counter evicts nothing');
    assert.equal(lc.counts('b', limits, T)[0]!.count, 1);
  });

  test('a changed limits array (an override) keeps what was admitted in the current windows (issue #12)', () => {
    const lc = new LocalCounts();
    for (let i = 0; i < 3; i++) lc.add(K, limits, T);
    assert.equal(lc.reached(K, limits, T), 0, '3 of 3 in 10 s');
    // Raised: the 3 admitted still count, so 3 more fill the new 6.
    const raised = compileOverride({
      limits: [
        { limit: 6, window: '10s', kind: 'rolling', resolution: '1s' },
        { limit: 10, window: '1m', kind: 'fixed' },
      ],
    }).limits;
    assert.deepEqual(
      lc.counts(K, raised, T).map((c) => c.count),
      [3, 3],
      'the first read under the override already sees them',
    );
    assert.equal(lc.reached(K, raised, T), -1, 'room under the raised limit');
    for (let i = 0; i < 3; i++) lc.add(K, raised, T + 1_000);
    assert.deepEqual(
      lc.counts(K, raised, T + 1_000).map((c) => c.count),
      [6, 6],
    );
    assert.equal(lc.reached(K, raised, T + 1_000), 0, '6 of 6: reached, not 3 of 6');
    assert.equal(lc.until(K, raised, T + 1_000), T + 10_000, 'room when the first 3 leave the window');
    assert.equal(lc.size, 1, 'replaced, not added');
    // Lowered below what was admitted: reached at once.
    const lowered = compileOverride({ limits: [{ limit: 4, window: '10s', kind: 'rolling', resolution: '1s' }] }).limits;
    assert.deepEqual(lc.counts(K, lowered, T + 2_000), [{ count: 6, reset: T + 10_000 }]);
    assert.equal(lc.reached(K, lowered, T + 2_000), 0);
    assert.equal(lc.until(K, lowered, T + 2_000), T + 10_000, 'room for one when the 3 at T leave (3 + 1 ≤ 4)');
    // Back to the rule's limits: still the same 6 admissions.
    assert.deepEqual(
      lc.counts(K, limits, T + 2_000).map((c) => c.count),
      [6, 6],
    );
    lc.add(K, rollingOnly, T + 2_000);
    assert.equal(lc.counts(K, rollingOnly, T + 2_000)[0]!.count, 7, 'a single-window limits array counts on its own layout, with what came before');
  });

  test('an override with another bucket size re-buckets the admissions, exactly where the sizes divide', () => {
    const lc = new LocalCounts();
    lc.add(K, limits, T + 500);
    lc.add(K, limits, T + 1_500);
    lc.add(K, limits, T + 2_500);
    const coarse = compileOverride({ limits: [{ limit: 5, window: '20s', kind: 'rolling', resolution: '2s' }] }).limits;
    assert.deepEqual(lc.counts(K, coarse, T + 2_500), [{ count: 3, reset: T + 20_000 }], 'the 1 s buckets summed into 2 s ones');
    assert.equal(lc.counts(K, coarse, T + 21_999)[0]!.count, 1, 'T + 0.5 s and T + 1.5 s left with their 2 s bucket at T + 20 s; T + 2.5 s leaves at T + 22 s');
  });
});
