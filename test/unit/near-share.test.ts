/**
 * Near-limit shares: the aggregator publishes `near` snapshots as a counter approaches a limit, and a
 * gateway holding one admits only its share of the room left. Pure parts only (CounterState,
 * DecisionCache, a Kafka-less Gateway); the fleet's overshoot with them is measured by the benchmark.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CounterState, type DecisionContext, type Effects } from '../../src/fold/counter-state.ts';
import { DecisionCache } from '../../src/gateway/decision-cache.ts';
import { Gateway } from '../../src/gateway/gateway.ts';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.ts';
import type { Decision } from '../../src/events/index.ts';
import { mustResolve } from './fixtures/simulate.ts';

const T0 = 1_711_108_800_000;
const policy = compilePolicy(
  parsePolicyText(
    `
version: "near"
product: near test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after, x-ratelimit] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 100, window: 60s, kind: fixed }] }
`,
    'near.yaml',
  ),
);
const ctx = (nearRatio: number): DecisionContext => ({ policyVersion: '1', region: 'test', nearRatio, message: () => 'Too Many Requests' });

function counter() {
  const r = mustResolve(policy, { subjects: { api_key: 'k1' } });
  return new CounterState(r.counterKey, r.tenantKey, r.rule, r.limits);
}

describe('CounterState: near snapshots', () => {
  test('from 80% of the limit, again each time the room left halves, then the block; gateways counted', () => {
    const cs = counter();
    const out: Effects = { decisions: [], breaches: [] };
    const seen: Array<[number, Decision]> = [];
    for (let i = 1; i <= 100; i++) {
      const before = out.decisions.length;
      cs.admit(T0 + i * 10, 1, ctx(0.8), out, `gw-${i % 3}`);
      for (const d of out.decisions.slice(before)) seen.push([i, d]);
    }
    assert.deepEqual(
      seen.map(([i, d]) => `${i}:${d.state}`),
      ['80:near', '90:near', '95:near', '98:near', '100:block'],
    );
    const first = seen[0]![1];
    assert.equal(first.observed, 80);
    assert.equal(first.limit, 100);
    assert.equal(first.gateways, 3, 'three gateways sent events since the counter was half full');
    assert.equal(first.until, T0 + 60_000, 'valid until the count next goes down: the fixed minute ends');
    assert.equal(seen[4]![1].gateways, undefined, 'blocks carry no share');
  });

  test('nearRatio 0 publishes none; a gateway that went quiet for a window no longer takes a share', () => {
    const off = counter();
    const out: Effects = { decisions: [], breaches: [] };
    for (let i = 1; i <= 99; i++) off.admit(T0 + i, 1, ctx(0), out, 'gw');
    assert.equal(out.decisions.length, 0);

    const cs = counter();
    const o2: Effects = { decisions: [], breaches: [] };
    for (let i = 1; i <= 50; i++) cs.admit(T0 + i, 1, ctx(0.8), o2, i % 2 ? 'a' : 'b'); // half full: both tracked
    // Next minute (fixed window, fresh count): only 'a' sends.
    for (let i = 1; i <= 80; i++) cs.admit(T0 + 60_000 + i, 1, ctx(0.8), o2, 'a');
    const near = o2.decisions.find((d) => d.state === 'near')!;
    assert.equal(near.observed, 80);
    assert.equal(near.gateways, 1, "'b' sent nothing within the window");
  });
});

function nearDecision(over: Partial<Decision> = {}): Decision {
  const r = mustResolve(policy, { subjects: { api_key: 'k1' } });
  return {
    schemaVersion: 1,
    counterKey: r.counterKey,
    tenant: r.tenantKey,
    rule: 'per-key',
    window: '60s',
    windowMs: 60_000,
    windowKind: 'fixed',
    state: 'near',
    until: T0 + 60_000,
    limit: 100,
    observed: 80,
    message: 'Too Many Requests',
    policyVersion: '1',
    region: 'test',
    decidedAt: T0 + 1_000,
    gateways: 4,
    ...over,
  };
}

describe('gateway: spending a near share', () => {
  test('with 4 gateways and 20 left, this one admits 5 more, then refuses with the near snapshot until it expires', () => {
    let now = T0 + 2_000;
    const gw = new Gateway({ policy, clock: () => now });
    gw.cache.apply(nearDecision(), now);
    const check = () => gw.check({ method: 'GET', path: '/x', headers: { 'x-api-key': 'k1' } });
    const reasons = Array.from({ length: 7 }, () => check().reason);
    assert.deepEqual(reasons, ['admitted', 'admitted', 'admitted', 'admitted', 'admitted', 'near-share', 'near-share']);
    const refused = check();
    assert.equal(refused.status, 429);
    assert.equal(refused.headers['X-RateLimit-Remaining'], '0');
    assert.equal(refused.headers['Retry-After'], String((T0 + 60_000 - now) / 1000));
    now = T0 + 60_000; // the snapshot lapses with the window
    assert.equal(check().reason, 'admitted');
  });

  test('a block replaces the snapshot, an unblock clears both; a new snapshot re-splits from zero spent', () => {
    const cache = new DecisionCache();
    const now = T0 + 2_000;
    cache.apply(nearDecision(), now);
    const n = cache.near(nearDecision().counterKey, now)!;
    assert.equal(n.share, 5);
    n.spent = 5;
    cache.apply(nearDecision({ observed: 96, gateways: 2, decidedAt: T0 + 1_500 }), now);
    assert.equal(cache.near(n.counterKey, now)!.share, 2);
    assert.equal(cache.near(n.counterKey, now)!.spent, 0);
    cache.apply(nearDecision({ state: 'block', observed: 100, gateways: undefined }), now);
    assert.equal(cache.near(n.counterKey, now), undefined);
    assert.ok(cache.get(n.counterKey, now));
    cache.apply(nearDecision({ state: 'near' }), now);
    cache.apply(nearDecision({ state: 'unblock', gateways: undefined }), now);
    assert.equal(cache.near(n.counterKey, now), undefined);
    assert.equal(cache.get(n.counterKey, now), undefined);
  });
});

describe('near shares: re-splitting', () => {
  test("what this gateway admitted after the new snapshot's event time is charged to the new share", () => {
    const cache = new DecisionCache();
    const key = nearDecision().counterKey;
    cache.apply(nearDecision({ decidedAt: T0 + 1_000 }), T0 + 1_100);
    const first = cache.near(key, T0 + 1_100)!;
    for (const t of [1_500, 1_600, 1_700, 2_500, 2_600]) cache.spend(first, T0 + t, 1);
    cache.apply(nearDecision({ observed: 90, gateways: 2, decidedAt: T0 + 2_000 }), T0 + 2_700);
    const second = cache.near(key, T0 + 2_700)!;
    assert.equal(second.share, 5);
    assert.equal(second.spent, 2, 'the two admissions after 2 000 ms were not in the count of 90');
  });

  test('a room that does not divide evenly: one more for a (room mod G)/G share of the gateways, so small rooms are not stranded', () => {
    const key = nearDecision().counterKey;
    const shareWith = (random: number, observed: number, gateways: number) => {
      const cache = new DecisionCache(() => random);
      cache.apply(nearDecision({ observed, gateways }), T0 + 2_000);
      return cache.near(key, T0 + 2_000)!.share;
    };
    assert.equal(shareWith(0.1, 95, 4), 2, 'room 5 over 4: 1, plus 1 when random × 4 < 1');
    assert.equal(shareWith(0.3, 95, 4), 1);
    assert.equal(shareWith(0.3, 97, 8), 1, 'room 3 over 8: 0, plus 1 for 3 in 8 gateways (random < 0.375)');
    assert.equal(shareWith(0.4, 97, 8), 0);
  });
});

describe('near shares: the remaining count in the headers', () => {
  test("near a limit, X-RateLimit-Remaining counts the snapshot's global count plus this gateway's admissions since", () => {
    const now = T0 + 2_000;
    const gw = new Gateway({ policy, clock: () => now });
    const check = () => gw.check({ method: 'GET', path: '/x', headers: { 'x-api-key': 'k1' } });
    assert.equal(check().headers['X-RateLimit-Remaining'], '99', 'alone: its own count');
    gw.cache.apply(nearDecision({ observed: 80, gateways: 4 }), now);
    assert.equal(check().headers['X-RateLimit-Remaining'], '19', '100 − (80 + 1 admitted against the snapshot)');
    assert.equal(check().headers['X-RateLimit-Remaining'], '18');
  });
});
