/**
 * The fold shared by the aggregator and replay (src/fold), table-driven: each row is a partition's
 * state, a batch of records and what the fold must make of them — counts, fences, skipped
 * redeliveries, refused events, late and rejected records, decisions and lapses.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.ts';
import { decisionContext, longestWindowMs } from '../../src/fold/context.ts';
import { decodeItems, foldItems, lapseBlocks, newPartition, storeWrites, type FoldRecord, type PartitionState } from '../../src/fold/fold.ts';
import type { Effects } from '../../src/fold/counter-state.ts';
import type { UsageEvent } from '../../src/events/index.ts';

const T0 = 1_795_507_200_000; // a whole hour
const NOW = T0 + 10 * 60_000;
const policy = compilePolicy(
  parsePolicyText(
    `
version: "fold"
product: fold unit test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - id: per-key
    default: true
    scope: api_key
    limits: [{ limit: 3, window: 10s, resolution: 1s }, { limit: 5, window: 1m, resolution: 10s }]
overrides:
  - { rule: per-key, subjects: { api_key: internal }, unlimited: true }
`,
    'fold.yaml',
  ),
);
const ctx = decisionContext(policy, 'test', 0);
const decodeOpts = { policy, longestWindowMs: longestWindowMs(policy), now: NOW, futureSkewMs: 5_000 };

interface Ev {
  key: string;
  t: number;
  refused?: boolean;
  cost?: number;
}
type Rec = [offset: number, event: Ev | string | null];

const value = (e: Ev | string | null): Buffer | null => {
  if (e === null) return null;
  if (typeof e === 'string') return Buffer.from(e);
  const event: UsageEvent = {
    schemaVersion: 1,
    eventTime: e.t,
    region: 'test',
    gatewayId: 'g',
    subjects: { api_key: e.key },
    api: null,
    cost: e.cost ?? 1,
    outcome: e.refused ? { kind: 'refused', decision: { counterKey: 'x', windowMs: 10_000, decidedAt: e.t } } : { kind: 'admitted' },
  };
  return Buffer.from(JSON.stringify(event));
};
const records = (rows: Rec[]): FoldRecord[] => rows.map(([offset, e]) => ({ offset, value: value(e) }));

interface Row {
  name: string;
  /** Batches folded first, to set the partition up. */
  before?: Rec[];
  /** Fences already stored, by api key (as the aggregator loads them). */
  fences?: Record<string, number>;
  batch: Rec[];
  lapseOnEventTime?: boolean;
  expect: {
    counted?: number;
    refused?: number;
    skipped?: number;
    late?: number;
    unlimited?: number;
    rejected?: string[];
    /** Decisions of the batch: `state@decidedAt-T0` per counter's key. */
    decisions?: string[];
    /** Fence each touched tenant reaches. */
    fences?: Record<string, number>;
    /** Counters holding a block afterwards. */
    blocked?: string[];
    /** Requests refused, charged to the open breach of each key's 10 s limit. */
    breachRefused?: Record<string, number>;
  };
}

const ROWS: Row[] = [
  {
    name: 'admitted events count; the third fills the 3/10s limit and blocks until the first leaves the window',
    batch: [
      [0, { key: 'a', t: T0 }],
      [1, { key: 'a', t: T0 + 100 }],
      [2, { key: 'a', t: T0 + 2_000 }],
    ],
    expect: { counted: 3, decisions: ['a:block@2000'], fences: { a: 2 }, blocked: ['a'] },
  },
  {
    name: "events at or below the tenant's fence are a redelivery: skipped, not counted twice",
    fences: { a: 11 },
    batch: [
      [10, { key: 'a', t: T0 }],
      [11, { key: 'a', t: T0 }],
      [12, { key: 'a', t: T0 }],
    ],
    expect: { counted: 1, skipped: 2, decisions: [], fences: { a: 12 } },
  },
  {
    name: "the fence is per tenant: another tenant's lower offsets still count",
    fences: { a: 50 },
    batch: [
      [20, { key: 'a', t: T0 }],
      [21, { key: 'b', t: T0 }],
      [51, { key: 'a', t: T0 }],
    ],
    expect: { counted: 2, skipped: 1, fences: { a: 51, b: 21 } },
  },
  {
    name: 'a refused event consumes nothing, is charged to the open breach and moves the fence',
    batch: [
      [0, { key: 'a', t: T0 }],
      [1, { key: 'a', t: T0 }],
      [2, { key: 'a', t: T0 }],
      [3, { key: 'a', t: T0 + 500, refused: true, cost: 2 }],
    ],
    expect: { counted: 3, refused: 1, decisions: ['a:block@0'], fences: { a: 3 }, blocked: ['a'], breachRefused: { a: 2 } },
  },
  {
    name: 'an event older than the longest window behind the watermark is late: dropped, fence unmoved',
    before: [[0, { key: 'b', t: T0 + 3 * 60_000 }]],
    batch: [
      [1, { key: 'a', t: T0 }],
      [2, { key: 'a', t: T0 + 2 * 60_000 + 1 }],
    ],
    expect: { counted: 1, late: 1, fences: { a: 2 } },
  },
  {
    name: 'an unlimited key is not counted and holds no fence',
    batch: [
      [0, { key: 'internal', t: T0 }],
      [1, { key: 'internal', t: T0 }],
    ],
    expect: { counted: 0, unlimited: 2, fences: {} },
  },
  {
    name: 'malformed, unresolved and future records are rejected with their reasons while good ones flow on',
    batch: [
      [0, 'not json'],
      [1, null],
      [2, { key: 'a', t: T0 }],
      [3, JSON.stringify({ schemaVersion: 1, eventTime: T0, region: 'r', gatewayId: 'g', subjects: {}, api: null, cost: 1, outcome: { kind: 'admitted' } })],
      [4, { key: 'a', t: NOW + 5_001 }],
      [5, { key: 'a', t: T0 + 1 }],
    ],
    expect: { counted: 2, rejected: ['undecodable', 'empty', 'unresolved', 'future'], fences: { a: 5 } },
  },
  {
    name: 'on event time (replay), a block lapses before a later event of the partition, dated its until',
    lapseOnEventTime: true,
    before: [
      [0, { key: 'a', t: T0 }],
      [1, { key: 'a', t: T0 }],
      [2, { key: 'a', t: T0 }],
    ],
    batch: [[3, { key: 'b', t: T0 + 30_000 }]],
    expect: { counted: 1, decisions: ['a:unblock@10000'], blocked: [] },
  },
  {
    name: 'without event-time lapses (the aggregator: its timer lapses) the block stays until lapseBlocks',
    before: [
      [0, { key: 'a', t: T0 }],
      [1, { key: 'a', t: T0 }],
      [2, { key: 'a', t: T0 }],
    ],
    batch: [[3, { key: 'b', t: T0 + 30_000 }]],
    expect: { counted: 1, decisions: [], blocked: ['a'] },
  },
  {
    name: 'an event after the lapse in the same window re-blocks on the longer limit',
    lapseOnEventTime: true,
    before: [
      [0, { key: 'a', t: T0 }],
      [1, { key: 'a', t: T0 }],
      [2, { key: 'a', t: T0 }],
    ],
    batch: [
      [3, { key: 'a', t: T0 + 10_000 }],
      [4, { key: 'a', t: T0 + 10_000 }],
    ],
    expect: { counted: 2, decisions: ['a:unblock@10000', 'a:block@10000'], blocked: ['a'] },
  },
];

function setUp(row: Row): PartitionState {
  const part = newPartition();
  const fx: Effects = { decisions: [], breaches: [] };
  if (row.before) {
    const d = decodeItems(part, records(row.before), decodeOpts);
    const f = foldItems(part, d.items, fx, { ctx, lapseOnEventTime: row.lapseOnEventTime });
    for (const t of f.touched.values()) t.tenant.fence = t.newFence;
  }
  for (const [key, fence] of Object.entries(row.fences ?? {})) part.tenants.set(`api_key=${key}`, { fence, counters: new Map() });
  return part;
}

const keyOf = (counterKey: string) => /api_key=([^:}]+)/.exec(counterKey)![1]!;

describe('the fold, row by row', () => {
  for (const row of ROWS) {
    test(row.name, () => {
      const part = setUp(row);
      const effects: Effects = { decisions: [], breaches: [] };
      const decoded = decodeItems(part, records(row.batch), decodeOpts);
      const folded = foldItems(part, decoded.items, effects, { ctx, lapseOnEventTime: row.lapseOnEventTime, collectIncrements: true });
      const e = row.expect;
      if (e.counted !== undefined) assert.equal(folded.counted, e.counted, 'counted');
      assert.equal(folded.refused, e.refused ?? 0, 'refused');
      assert.equal(folded.skipped, e.skipped ?? 0, 'skipped below the fence');
      assert.equal(decoded.late, e.late ?? 0, 'late');
      assert.equal(decoded.unlimited, e.unlimited ?? 0, 'unlimited');
      assert.deepEqual(
        decoded.rejected.map((r) => r.reason),
        e.rejected ?? [],
        'rejected',
      );
      if (e.decisions)
        assert.deepEqual(
          effects.decisions.filter((d) => d.state !== 'near').map((d) => `${keyOf(d.counterKey)}:${d.state}@${d.decidedAt - T0}`),
          e.decisions,
        );
      if (e.fences)
        assert.deepEqual(Object.fromEntries([...folded.touched].map(([k, t]) => [k.replace('api_key=', ''), t.newFence])), e.fences, 'fences reached');
      if (e.blocked) assert.deepEqual([...part.blocked].map((cs) => keyOf(cs.counterKey)).sort(), e.blocked, 'blocked counters');
      for (const [key, n] of Object.entries(e.breachRefused ?? {})) {
        const cs = [...part.tenants.get(`api_key=${key}`)!.counters.values()][0]!;
        assert.equal(cs.breaches.get(10_000)?.refused, n, `refused requests on ${key}'s open breach`);
      }
    });
  }
});

describe('the fold: what the store write and the timer get', () => {
  test('increments per bucket size of every admitted event; a counter only refused on has an empty write', () => {
    const part = newPartition();
    const d = decodeItems(
      part,
      records([
        [0, { key: 'a', t: T0 + 1_500 }],
        [1, { key: 'a', t: T0 + 1_700, cost: 2 }],
        [2, { key: 'b', t: T0, refused: true }],
      ]),
      decodeOpts,
    );
    const f = foldItems(part, d.items, { decisions: [], breaches: [] }, { ctx, collectIncrements: true });
    const writes = storeWrites(f.touched, part.watermark, 3_600_000);
    const a = writes.find((w) => w.tenantKey === 'api_key=a')!;
    assert.deepEqual([a.expectedFence, a.newFence, a.ttlMs], [null, 1, 3_600_000]);
    assert.deepEqual(
      a.counters[0]!.increments.map((i) => [i.bucketMs, i.bucketIndex - Math.floor(T0 / i.bucketMs), i.delta]),
      [
        [1_000, 1, 3],
        [10_000, 0, 3],
      ],
    );
    const keepFrom = [
      { bucketMs: 1_000, bucketIndex: Math.floor((T0 + 1_700) / 1_000) - 10 },
      { bucketMs: 10_000, bucketIndex: Math.floor((T0 + 1_700) / 10_000) - 6 },
    ];
    // Pruning waits until the hash holds twice what the windows need: 11 one-second and 7 ten-second buckets here.
    assert.deepEqual(a.counters[0]!.prune, { whenMoreThan: 2 * (11 + 7) + 8, keepFrom });
    const b = writes.find((w) => w.tenantKey === 'api_key=b')!;
    assert.deepEqual(b.counters[0]!.increments, [], 'nothing to add; the fence still moves');
    assert.equal(b.newFence, 2);
  });

  test('lapseBlocks lapses only the blocks due at the time given, and returns them', () => {
    const part = newPartition();
    const fx: Effects = { decisions: [], breaches: [] };
    const d = decodeItems(
      part,
      records([
        [0, { key: 'a', t: T0 }],
        [1, { key: 'a', t: T0 }],
        [2, { key: 'a', t: T0 }],
        [3, { key: 'b', t: T0 + 5_000 }],
        [4, { key: 'b', t: T0 + 5_000 }],
        [5, { key: 'b', t: T0 + 5_000 }],
      ]),
      decodeOpts,
    );
    foldItems(part, d.items, fx, { ctx });
    assert.equal(part.nextLapse, T0 + 10_000, 'the earliest until');
    const out: Effects = { decisions: [], breaches: [] };
    assert.deepEqual(lapseBlocks(part, T0 + 9_999, ctx, out), []);
    const lapsed = lapseBlocks(part, T0 + 10_000, ctx, out);
    assert.deepEqual(
      lapsed.map((cs) => keyOf(cs.counterKey)),
      ['a'],
    );
    assert.deepEqual(
      out.decisions.map((x) => [x.state, x.decidedAt - T0]),
      [['unblock', 10_000]],
      'dated its until, not the time given',
    );
    assert.equal(part.nextLapse, T0 + 15_000);
    assert.deepEqual(
      [...part.blocked].map((cs) => keyOf(cs.counterKey)),
      ['b'],
    );
  });
});
