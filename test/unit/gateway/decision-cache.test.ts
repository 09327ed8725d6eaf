/** DecisionCache: blocks live while now < until, whatever else arrives (or does not). */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { DecisionCache } from '../../../src/gateway/decision-cache.ts';
import { decision } from './fixtures.ts';

const T = 1_711_108_860_000;
const KEY = '{api_key=k1}:per-key:api_key=k1';

describe('DecisionCache', () => {
  test('a block is returned before until, and no longer at or after until even with no unblock', () => {
    const cache = new DecisionCache();
    assert.equal(cache.apply(decision({ counterKey: KEY, until: T + 10_000, observed: 75 }), T), true);
    const held = cache.get(KEY, T);
    assert.equal(held?.until, T + 10_000);
    assert.equal(held?.observed, 75);
    assert.equal(held?.windowMs, 60_000);
    assert.equal(cache.get(KEY, T + 9_999)?.until, T + 10_000, 'still live 1 ms before until');
    assert.equal(cache.get(KEY, T + 10_000), undefined, 'expired at until');
    assert.equal(cache.size, 0, 'dropped once read expired');
    assert.equal(cache.get(KEY, T + 9_999), undefined, 'gone for good, even for an earlier clock');
  });

  test('a block expires at until for every reader: live() and get() agree', () => {
    const cache = new DecisionCache();
    cache.apply(decision({ counterKey: KEY, until: T + 5_000 }), T);
    assert.deepEqual(
      cache.live(T + 4_999).map((b) => b.counterKey),
      [KEY],
    );
    assert.deepEqual(cache.live(T + 5_000), []);
  });

  test('an unblock removes the block early', () => {
    const cache = new DecisionCache();
    cache.apply(decision({ counterKey: KEY, until: T + 60_000 }), T);
    // An unblock removes the block whatever its own until says (here still in the future).
    assert.equal(cache.apply(decision({ counterKey: KEY, until: T + 30_000, state: 'unblock' }), T + 1_000), true);
    assert.equal(cache.get(KEY, T + 1_001), undefined);
    assert.equal(cache.size, 0);
    assert.equal(cache.apply(decision({ counterKey: KEY, until: T + 2_000, state: 'unblock' }), T + 2_000), false, 'an unblock of nothing changes nothing');
    assert.equal(cache.applied, 3, 'every record is counted as applied');
  });

  test('an unblock of one counter leaves the others blocked', () => {
    const cache = new DecisionCache();
    const other = '{api_key=k2}:per-key:api_key=k2';
    cache.apply(decision({ counterKey: KEY, until: T + 60_000 }), T);
    cache.apply(decision({ counterKey: other, until: T + 60_000 }), T);
    cache.apply(decision({ counterKey: KEY, until: T, state: 'unblock' }), T);
    assert.equal(cache.get(KEY, T), undefined);
    assert.equal(cache.get(other, T)?.counterKey, other);
  });

  test('a block already expired when applied (a replayed, stale record) is not stored', () => {
    const cache = new DecisionCache();
    assert.equal(cache.apply(decision({ counterKey: KEY, until: T }), T), false, 'until == now: already expired');
    assert.equal(cache.apply(decision({ counterKey: KEY, until: T - 1 }), T), false);
    assert.equal(cache.size, 0);
    assert.equal(cache.get(KEY, T - 10), undefined, 'not stored, so not visible even to an earlier clock');
  });

  test('sweep drops expired blocks and keeps live ones', () => {
    const cache = new DecisionCache();
    cache.apply(decision({ counterKey: 'a', until: T + 1_000 }), T);
    cache.apply(decision({ counterKey: 'b', until: T + 2_000 }), T);
    cache.apply(decision({ counterKey: 'c', until: T + 3_000 }), T);
    assert.equal(cache.sweep(T + 999), 0);
    assert.equal(cache.sweep(T + 2_000), 2, 'a (past) and b (until == now)');
    assert.equal(cache.size, 1);
    assert.equal(cache.get('c', T + 2_000)?.counterKey, 'c');
    assert.equal(cache.sweep(T + 3_000), 1);
    assert.equal(cache.size, 0);
  });

  test('a later block replaces an earlier one, whether it ends later or sooner', () => {
    const cache = new DecisionCache();
    cache.apply(decision({ counterKey: KEY, until: T + 10_000, window: '60s', windowMs: 60_000, observed: 61 }), T);
    cache.apply(decision({ counterKey: KEY, until: T + 3_000_000, window: '1h', windowMs: 3_600_000, limit: 1000, observed: 1001 }), T + 1);
    assert.equal(cache.size, 1);
    const hour = cache.get(KEY, T + 20_000);
    assert.equal(hour?.windowMs, 3_600_000, "the hour block is live past the minute block's until");
    assert.equal(hour?.limit, 1000);
    cache.apply(decision({ counterKey: KEY, until: T + 5_000, observed: 62 }), T + 2);
    assert.equal(cache.get(KEY, T + 4_999)?.observed, 62);
    assert.equal(cache.get(KEY, T + 5_000), undefined, 'the latest record decides, even a shorter block');
  });

  test("an expired record replaces a live one (the compacted topic's latest record wins)", () => {
    const cache = new DecisionCache();
    cache.apply(decision({ counterKey: KEY, until: T + 10_000 }), T);
    assert.equal(cache.apply(decision({ counterKey: KEY, until: T + 500 }), T + 1_000), true);
    assert.equal(cache.get(KEY, T + 1_000), undefined);
  });
});
