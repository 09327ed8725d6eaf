/** The replay's pure parts: the fold (the aggregator's rules without Kafka or Redis) and the what-if comparison. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.ts';
import { decisionContext, longestWindowMs } from '../../src/fold/context.ts';
import { ReplayFold, compareBlocks, summarize, type BlockInterval } from '../../src/replay/index.ts';
import type { UsageEvent } from '../../src/events/index.ts';

const T0 = 1_795_507_200_000; // a whole hour in UTC, in the past
const policy = compilePolicy(
  parsePolicyText(
    `
version: "unit"
product: replay unit test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 3, window: 10s, resolution: 1s }] }
`,
    'unit.yaml',
  ),
);

function fold(): ReplayFold {
  return new ReplayFold({
    policy,
    ctx: decisionContext(policy, 'test', 0),
    longestWindowMs: longestWindowMs(policy),
    collectBreaches: true,
    now: T0 + 3_600_000,
  });
}

function record(apiKey: string, eventTime: number, extra: Partial<UsageEvent> = {}): Buffer {
  const e: UsageEvent = {
    schemaVersion: 1,
    eventTime,
    region: 'test',
    gatewayId: 'g',
    subjects: { api_key: apiKey },
    api: null,
    cost: 1,
    outcome: { kind: 'admitted' },
    ...extra,
  };
  return Buffer.from(JSON.stringify(e));
}

describe('ReplayFold', () => {
  test('a block lapses on event time, dated its until, before a later event of the partition is folded', () => {
    const f = fold();
    let offset = 0;
    for (let i = 0; i < 3; i++) f.add(0, offset++, record('a', T0 + i * 100));
    assert.equal(f.stats.blocks, 1);
    // Another tenant's event 30 s later on the same partition: the aggregator's timer would have lapsed a's block at its until.
    f.add(0, offset++, record('b', T0 + 30_000));
    assert.equal(f.stats.unblocks, 1);
    const lifted = f.breaches.find((b) => b.tenant === 'api_key=a' && b.liftedAt !== null)!;
    assert.equal(lifted.liftedAt, T0 + 10_000, 'lifted when the window had room again, not when the next event came');
  });

  test('finish lapses what no later event reached; blocks still due stay', () => {
    const f = fold();
    for (let i = 0; i < 3; i++) f.add(1, i, record('a', T0 + i * 100));
    for (let i = 0; i < 3; i++) f.add(2, i, record('b', T0 + 20_000 + i * 100));
    f.finish(T0 + 15_000);
    assert.deepEqual(
      f.breaches.filter((b) => b.liftedAt !== null).map((b) => b.tenant),
      ['api_key=a'],
    );
    const b = f.partitions.get(2)!.tenants.get('api_key=b')!.counters.values().next().value!;
    assert.equal(b.block?.until, T0 + 30_000);
  });

  test('fences are the last counted or refused offset per tenant; refused events charge the open breach; bad records are counted', () => {
    const f = fold();
    f.add(0, 10, record('a', T0));
    f.add(0, 11, record('a', T0 + 1));
    f.add(0, 12, record('a', T0 + 2));
    f.add(0, 13, record('a', T0 + 3, { outcome: { kind: 'refused', decision: { counterKey: 'x', windowMs: 10_000, decidedAt: T0 + 2 } } }));
    f.add(0, 14, Buffer.from('not json'));
    f.add(0, 15, record('a', T0 - 2 * 3_600_000)); // far behind the partition's newest event: late
    const tenant = f.partitions.get(0)!.tenants.get('api_key=a')!;
    assert.equal(tenant.fence, 13);
    const cs = tenant.counters.values().next().value!;
    assert.equal(cs.breaches.get(10_000)?.refused, 1);
    assert.deepEqual({ ...f.stats }, { records: 6, events: 6, counted: 3, refused: 1, late: 1, unlimited: 0, invalid: 1, blocks: 1, unblocks: 0 });
  });
});

describe('compareBlocks', () => {
  const block = (key: string, from: number, to: number | null, extra: Partial<BlockInterval> = {}): BlockInterval => ({
    counterKey: key,
    tenant: key,
    rule: 'r',
    window: '1h',
    windowMs: 3_600_000,
    limit: 10,
    from,
    to,
    peakCount: 10,
    ...extra,
  });

  test('new, lifted, changed and same, matched by overlap per key and window', () => {
    const decided = [block('same', 100, 200), block('moved', 100, 200), block('gone', 100, 200), block('twice', 100, 150), block('twice', 500, 600)];
    const whatIf = [block('same', 100, 200), block('moved', 50, 260), block('fresh', 300, null, { until: 900 }), block('twice', 120, 150)];
    const rows = compareBlocks(decided, whatIf);
    const by = (key: string) => rows.filter((r) => r.counterKey === key).map((r) => r.change);
    assert.deepEqual(by('same'), ['same']);
    assert.deepEqual(by('moved'), ['changed']);
    assert.equal(rows.find((r) => r.counterKey === 'moved')!.durationChangeMs, 110);
    assert.deepEqual(by('gone'), ['lifted']);
    assert.deepEqual(by('fresh'), ['new']);
    assert.deepEqual(by('twice').sort(), ['changed', 'lifted'], 'the second decided block overlaps no what-if block');
    assert.deepEqual(summarize(rows), { new: 1, lifted: 2, changed: 2, same: 1, decided: 5, whatIf: 4 });
  });

  test('another window of the same key is another block; an open block overlaps everything after its start', () => {
    const rows = compareBlocks([block('k', 100, null)], [block('k', 5_000, 6_000), block('k', 100, 200, { window: '1m', windowMs: 60_000 })]);
    assert.deepEqual(
      rows.map((r) => [r.window, r.change]),
      [
        ['1m', 'new'],
        ['1h', 'changed'],
      ],
    );
    assert.equal(rows[1]!.durationChangeMs, null, 'the decided block is still open');
  });
});
