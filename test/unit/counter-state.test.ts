/** Decisions and breach records of one counter, on event time: the aggregator's pure core. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CounterState, type DecisionContext, type Effects } from '../../src/fold/counter-state.ts';
import { loadShipped, mustResolve } from './fixtures/simulate.ts';
import { messageTemplate, renderMessage } from '../../src/refusal/index.ts';

const T0 = 1_711_108_800_000; // a whole hour (and minute) in UTC

function setup(file: 'talkpilot.yaml' | 'kore-automation-ai.yaml', request: Parameters<typeof mustResolve>[1]) {
  const policy = loadShipped(file);
  const r = mustResolve(policy, request);
  const ctx: DecisionContext = {
    policyVersion: policy.version,
    region: 'test',
    nearRatio: 0, // near snapshots have their own tests below
    message: (limit, retryAfter) =>
      renderMessage(messageTemplate(policy.refusal, limit.windowMs), { retry_after: retryAfter, window: limit.name, limit: limit.limit }),
  };
  const cs = new CounterState(r.counterKey, r.tenantKey, r.rule, r.limits);
  const fx = (): Effects => ({ decisions: [], breaches: [] });
  return { cs, ctx, fx };
}

describe('CounterState: TalkPilot, 60/min and 1000/h fixed windows per API key', () => {
  const request = { subjects: { api_key: 'k1' } };

  test('the 60th admitted request blocks (exactly one decision) until the minute resets; the 59th does not', () => {
    const { cs, ctx, fx } = setup('talkpilot.yaml', request);
    const out = fx();
    for (let i = 0; i < 59; i++) cs.admit(T0 + 10_000 + i * 100, 1, ctx, out);
    assert.equal(out.decisions.length, 0);
    cs.admit(T0 + 20_000, 1, ctx, out);
    assert.equal(out.decisions.length, 1);
    const d = out.decisions[0]!;
    assert.equal(d.state, 'block');
    assert.equal(d.until, T0 + 60_000, 'the fixed minute resets on the minute');
    assert.equal(d.limit, 60);
    assert.equal(d.observed, 60);
    assert.equal(d.decidedAt, T0 + 20_000);
    assert.equal(d.message, 'Rate limit exceeded. Try again in 40 seconds.');
    assert.equal(out.breaches.length, 1, 'a breach opens');
    assert.equal(out.breaches[0]!.liftedAt, null);
    assert.equal(out.breaches[0]!.overshoot, 0);
  });

  test('admissions over the limit are overshoot; refusals are counted; the lapse unblocks at until and closes the breach', () => {
    const { cs, ctx, fx } = setup('talkpilot.yaml', request);
    const out = fx();
    for (let i = 0; i < 60; i++) cs.admit(T0 + i * 100, 1, ctx, out);
    cs.admit(T0 + 30_000, 2, ctx, out); // a coalesced event admitted by a gateway that had not seen the block
    cs.refused(60_000, 5);
    assert.equal(out.decisions.length, 1, 'until did not move: no new decision');
    assert.equal(cs.lapsesAt(), T0 + 60_000);

    const later = fx();
    cs.lapse(T0 + 59_999, ctx, later);
    assert.equal(later.decisions.length, 0, 'not before until');
    cs.lapse(T0 + 61_234, ctx, later);
    assert.equal(later.decisions.length, 1);
    assert.equal(later.decisions[0]!.state, 'unblock');
    assert.equal(later.decisions[0]!.decidedAt, T0 + 60_000, 'dated at until, not when the timer fired');
    const closed = later.breaches[0]!;
    assert.equal(closed.liftedAt, T0 + 60_000);
    assert.equal(closed.overshoot, 2);
    assert.equal(closed.refused, 5);
    assert.equal(closed.peakCount, 62);
    assert.equal(closed.countAtCrossing, 60);
    assert.equal(cs.block, null);
  });

  test('a coalesced event that straddles the limit: only the part over the limit is overshoot', () => {
    const { cs, ctx, fx } = setup('talkpilot.yaml', request);
    const out = fx();
    for (let i = 0; i < 58; i++) cs.admit(T0 + i * 100, 1, ctx, out);
    cs.admit(T0 + 10_000, 4, ctx, out); // 58 + 4 = 62: two of the four fit, two are over
    assert.equal(out.breaches[0]!.countAtCrossing, 62);
    assert.equal(out.breaches[0]!.overshoot, 2);
    cs.admit(T0 + 11_000, 3, ctx, out); // all three over
    const closed = fx();
    cs.lapse(T0 + 60_000, ctx, closed);
    assert.equal(closed.breaches[0]!.overshoot, 5);
  });

  test('a raised limit lifts the block at once; the closing breach record names the limit that was crossed', () => {
    const { cs, ctx, fx } = setup('talkpilot.yaml', request);
    const out = fx();
    for (let i = 0; i < 60; i++) cs.admit(T0 + i * 100, 1, ctx, out);
    const raised = cs.limits.map((l) => (l.windowMs === 60_000 ? { ...l, limit: 720 } : l));
    const lifted = fx();
    const next = cs.withLimits(raised, T0 + 10_000, ctx, lifted);
    assert.deepEqual(
      lifted.decisions.map((d) => d.state),
      ['unblock'],
    );
    assert.equal(next.block, null);
    const closed = lifted.breaches.find((b) => b.windowMs === 60_000)!;
    assert.equal(closed.liftedAt, T0 + 10_000);
    assert.equal(closed.limit, 60, 'the limit crossed, not the one that lifted it');
  });

  test('across a raise and a lowering the counter keeps what was admitted in the current windows (issue #12)', () => {
    const { cs, ctx, fx } = setup('talkpilot.yaml', request);
    const out = fx();
    for (let i = 0; i < 60; i++) cs.admit(T0 + i * 100, 1, ctx, out);
    const raised = cs.limits.map((l) => (l.windowMs === 60_000 ? { ...l, limit: 120 } : l));
    const up = cs.withLimits(raised, T0 + 10_000, ctx, fx());
    assert.equal(up.counter.count(up.windows[0]!.window, T0 + 10_000), 60, 'the 60 admitted still count');
    const more = fx();
    for (let i = 0; i < 60; i++) up.admit(T0 + 10_000 + i * 100, 1, ctx, more);
    assert.deepEqual(
      more.decisions.filter((d) => d.state === 'block').map((d) => [d.observed, d.limit]),
      [[120, 120]],
      'one block, when 120 are counted',
    );
    const lowered = up.limits.map((l) => (l.windowMs === 60_000 ? { ...l, limit: 100 } : l));
    const down = fx();
    const next = up.withLimits(lowered, T0 + 20_000, ctx, down);
    assert.equal(next.block?.until, T0 + 60_000, 'still blocked under 100: 120 counted until the fixed minute resets');
    // Another bucket size: the 1 s buckets of the minute are summed into 2 s ones.
    const coarse = [{ ...cs.limits[0]!, limit: 500, window: '120s', windowMs: 120_000, bucketMs: 2_000 }];
    const rebucketed = next.withLimits(coarse, T0 + 20_000, ctx, fx());
    assert.equal(rebucketed.counter.count(rebucketed.windows[0]!.window, T0 + 20_000), 120);
  });

  test('the hourly limit blocks until the hour resets although the minute has room', () => {
    const { cs, ctx, fx } = setup('talkpilot.yaml', request);
    const out = fx();
    // 50 a minute for 20 minutes = 1000 in the hour, never 60 in a minute
    for (let m = 0; m < 20; m++) for (let i = 0; i < 50; i++) cs.admit(T0 + m * 60_000 + i * 1000, 1, ctx, out);
    assert.equal(out.decisions.length, 1);
    assert.equal(out.decisions[0]!.window, '1h');
    assert.equal(out.decisions[0]!.until, T0 + 3_600_000);
  });

  test('state survives a reload: a restored block lapses, a restored breach keeps its counts', () => {
    const a = setup('talkpilot.yaml', request);
    const out = a.fx();
    for (let i = 0; i < 61; i++) a.cs.admit(T0 + i * 100, 1, a.ctx, out);
    const meta = new Map(a.cs.takeMetaChanges().filter(([, v]) => v !== ''));
    const b = setup('talkpilot.yaml', request);
    for (const w of b.cs.windows) for (const [idx, c] of a.cs.counter.buckets(w.window)) b.cs.counter.loadBucket(w.window.bucketMs, idx, c);
    b.cs.restoreMeta(meta);
    assert.deepEqual(b.cs.block, a.cs.block);
    const after = b.fx();
    b.cs.lapse(T0 + 60_000, b.ctx, after);
    assert.equal(after.decisions[0]!.state, 'unblock');
    assert.equal(after.breaches[0]!.overshoot, 1);
  });
});

describe('CounterState: Kore.ai rolling 60/min + 1800/h per bot', () => {
  test('a rolling block re-publishes only when until moves by at least a bucket', () => {
    const { cs, ctx, fx } = setup('kore-automation-ai.yaml', { api: 'Bot Export', subjects: { bot: 'b1', account: 'a1' } });
    const out = fx();
    for (let i = 0; i < 60; i++) cs.admit(T0 + i * 10, 1, ctx, out); // all in the first second
    assert.equal(out.decisions.length, 1);
    assert.equal(out.decisions[0]!.until, T0 + 60_000, 'room when the first second leaves the window');
    assert.equal(out.decisions[0]!.message, 'You’ve exceeded the per-minute rate limit. Please wait for sometime before retrying.');
    cs.admit(T0 + 500, 1, ctx, out); // same bucket: until unchanged
    assert.equal(out.decisions.length, 1);
    for (let i = 0; i < 60; i++) cs.admit(T0 + 30_000, 1, ctx, out); // a full minute's worth at 30 s
    assert.equal(out.decisions.length, 2, 'until moved to when the 30 s bucket leaves');
    assert.equal(out.decisions[1]!.until, T0 + 90_000);
  });
});

describe('CounterState.idle: when a counter may leave memory', () => {
  test('not while it counts, blocks, holds a breach or has meta to write; yes once everything has lapsed and is written', () => {
    const { cs, ctx, fx } = setup('talkpilot.yaml', { subjects: { api_key: 'k1' } });
    const out = fx();
    cs.admit(T0, 1, ctx, out);
    assert.equal(cs.idle(T0 + 1_000), false, 'still counting in the minute and the hour');
    assert.equal(cs.idle(T0 + 3_600_000), true, 'both fixed windows have reset');

    for (let i = 0; i < 60; i++) cs.admit(T0 + 10, 1, ctx, out);
    assert.equal(cs.idle(T0 + 3_600_000), false, 'blocked and in breach');
    cs.lapse(T0 + 3_600_000, ctx, out);
    assert.equal(cs.block, null);
    assert.equal(cs.idle(T0 + 3_600_000), false, 'the lifted block and closed breach are not written yet');
    cs.takeMetaChanges();
    assert.equal(cs.idle(T0 + 3_600_000), true);
  });
});
