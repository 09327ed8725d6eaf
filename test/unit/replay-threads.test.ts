/**
 * The replay's fold on worker threads (real threads running src/replay/worker.ts) gives what the fold
 * on one thread gives: the same counts, fences, bucket writes, blocks and breach records.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.ts';
import { DEFAULT_NEAR_RATIO, decisionContext, longestWindowMs } from '../../src/fold/context.ts';
import { defaultWorkers, ReplayFold, type FoldSummary } from '../../src/replay/index.ts';
import { FoldThreads, mergeSummaries, pack, unpack, type WorkerInit } from '../../src/replay/threads.ts';
import { batchHeaderOf, encodeBatch } from '../../src/events/batch.ts';
import type { UsageEvent } from '../../src/events/index.ts';
import type { FoldRecord } from '../../src/fold/fold.ts';

const T0 = 1_795_507_200_000; // a whole hour in UTC, in the past
const NOW = T0 + 3_600_000;
const policy = compilePolicy(
  parsePolicyText(
    `
version: "threads"
product: replay threads unit test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 20, window: 10s, resolution: 1s }, { limit: 60, window: 1m }] }
`,
    'threads.yaml',
  ),
);

function event(apiKey: string, eventTime: number, extra: Partial<UsageEvent> = {}): UsageEvent {
  return {
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
}

/** Six partitions of records: single events and batch records, hot keys that cross both limits, refusals, junk and a null value. */
function corpus(): Map<number, FoldRecord[]> {
  const parts = new Map<number, FoldRecord[]>();
  let seed = 7;
  const rnd = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
  for (let p = 0; p < 6; p++) {
    const records: FoldRecord[] = [];
    const keys = Array.from({ length: 5 + p }, (_, i) => `p${p}k${i}`);
    for (let i = 0; i < 400; i++) {
      const t = T0 + i * 150 + Math.floor(rnd() * 100);
      const key = rnd() < 0.4 ? keys[0]! : keys[Math.floor(rnd() * keys.length)]!;
      const offset = records.length;
      if (i % 50 === 7) records.push({ offset, value: Buffer.from('not json') });
      else if (i % 97 === 3) records.push({ offset, value: null });
      else if (i % 10 === 0) {
        const events = [event(key, t), event(key, t + 1, { cost: 3 }), event(keys[1]!, t + 2)];
        records.push({ offset, value: Buffer.from(encodeBatch(batchHeaderOf(events[0]!), events)) });
      } else if (i % 13 === 0) {
        const refused = { kind: 'refused' as const, decision: { counterKey: `api_key=${key}`, windowMs: 10_000, decidedAt: t - 5 } };
        records.push({ offset, value: Buffer.from(JSON.stringify(event(key, t, { outcome: refused }))) });
      } else records.push({ offset, value: Buffer.from(JSON.stringify(event(key, t))) });
    }
    parts.set(p, records);
  }
  return parts;
}

const init: WorkerInit = {
  policy: policy.policy,
  overrides: undefined,
  region: 'test',
  nearRatio: DEFAULT_NEAR_RATIO,
  collectBreaches: true,
  writes: true,
  now: NOW,
  futureSkewMs: undefined,
};

function inOneThread(parts: Map<number, FoldRecord[]>, batch: number): FoldSummary {
  const f = new ReplayFold({
    policy,
    ctx: decisionContext(policy, init.region, init.nearRatio),
    longestWindowMs: longestWindowMs(policy),
    collectBreaches: true,
    now: NOW,
  });
  // Interleaved, as a reader hands partitions over.
  for (let from = 0; from < 400; from += batch) for (const [p, records] of parts) f.addBatch(p, records.slice(from, from + batch));
  f.finish(T0 + 60_000);
  return f.summary({ writes: true });
}

async function onThreads(parts: Map<number, FoldRecord[]>, workers: number, batch: number, maxPendingBytes?: number) {
  const ranges = [...parts].map(([partition, r]) => ({ partition, start: 0, end: r.length }));
  const threads = new FoldThreads(workers, init, { maxPendingBytes });
  let waits = 0;
  try {
    await threads.assign(ranges);
    for (let from = 0; from < 400; from += batch) {
      for (const [p, records] of parts) {
        const wait = threads.add(p, records.slice(from, from + batch));
        if (wait) {
          waits++;
          await wait;
        }
      }
    }
    return { summary: await threads.finish(T0 + 60_000), waits };
  } finally {
    await threads.close();
  }
}

/** Breach records come partition by partition from each worker: compared in one order. */
const comparable = (s: FoldSummary) => ({
  ...s,
  breaches: s.breaches.map((b) => JSON.stringify(b)).sort(),
  partitions: [...s.partitions].sort((a, b) => a.partition - b.partition),
});

describe('replay fold on worker threads', () => {
  test('two and four workers give the one-thread summary: stats, counters, fences, bucket writes, blocks, breaches', async () => {
    const parts = corpus();
    const one = inOneThread(parts, 25);
    assert.ok(
      one.stats.blocks > 0 && one.stats.refused > 0 && one.stats.invalid > 0 && one.breaches.length > 0,
      'the corpus exercises blocks, refusals and junk',
    );
    assert.equal(one.partitions.length, 6);
    for (const workers of [2, 4]) {
      const { summary } = await onThreads(parts, workers, 25);
      assert.deepEqual(comparable(summary), comparable(one), `${workers} workers`);
    }
  });

  test('a worker behind makes the reader wait, and nothing is lost', async () => {
    const parts = corpus();
    const { summary, waits } = await onThreads(parts, 2, 40, 1);
    assert.ok(waits > 0, 'with a bound of one byte every batch waits');
    assert.deepEqual(comparable(summary), comparable(inOneThread(parts, 40)));
  });

  test("a worker's error reaches finish", async () => {
    const broken = new FoldThreads(1, { ...init, policy: { ...policy.policy, rules: null as never } });
    try {
      await broken.assign([{ partition: 0, start: 0, end: 1 }]);
      await assert.rejects(broken.finish(T0), TypeError);
      assert.ok(broken.failed.aborted);
    } finally {
      await broken.close();
    }
  });

  test('a worker that ends before its summary fails the fold instead of leaving finish waiting', async () => {
    const threads = new FoldThreads(1, init);
    try {
      await threads.assign([{ partition: 0, start: 0, end: 1 }]);
      // As if the thread died (out of memory, killed): it ends without answering.
      await (threads as unknown as { threads: Array<{ worker: { terminate(): Promise<number> } }> }).threads[0]!.worker.terminate();
      await assert.rejects(threads.finish(T0), /ended \(exit code \d+\) before its summary/);
    } finally {
      await threads.close();
    }
  });

  test('workers beyond the partitions to read are stopped', async () => {
    const threads = new FoldThreads(3, init);
    try {
      await threads.assign([{ partition: 2, start: 0, end: 10 }]);
      assert.equal(threads.size, 1);
      threads.add(2, [{ offset: 0, value: Buffer.from(JSON.stringify(event('a', T0))) }]);
      assert.throws(() => threads.add(0, []), /partition 0 was not in the replay's ranges/);
      const s = await threads.finish(T0 + 1_000);
      assert.equal(s.stats.counted, 1);
      assert.ok(!threads.failed.aborted, 'stopping the spare workers is not a failure');
    } finally {
      await threads.close();
    }
  });

  test('by default one worker per core, none on one core', () => {
    assert.equal(defaultWorkers(1), 0);
    assert.equal(defaultWorkers(2), 2);
    assert.equal(defaultWorkers(1_000), 256, 'never more than a worker count the pool takes');
    assert.ok(Number.isInteger(defaultWorkers()));
  });

  test('a worker count that is not a whole number from 1 to 256 is refused before any thread starts', () => {
    for (const n of [0, -1, 1.5, Infinity, Number.NaN, 257]) assert.throws(() => new FoldThreads(n, init), RangeError, String(n));
  });

  test('packing keeps offsets, null values and bytes; merging sums stats and orders partitions', () => {
    const records = [
      { offset: 5, value: Buffer.from('ab') },
      { offset: 6, value: null },
      { offset: 9, value: Buffer.from('') },
      { offset: 2 ** 40, value: Buffer.from('xyz') },
    ];
    assert.deepEqual(
      unpack(pack(3, records)).map((r) => [r.offset, r.value?.toString() ?? null]),
      [
        [5, 'ab'],
        [6, null],
        [9, ''],
        [2 ** 40, 'xyz'],
      ],
    );
    const s = (partition: number, counted: number): FoldSummary => ({
      stats: { records: 1, events: 1, counted, refused: 0, late: 0, unlimited: 0, invalid: 0, blocks: 0, unblocks: 0 },
      counters: 2,
      breaches: [],
      partitions: [{ partition, tenants: [] }],
    });
    const merged = mergeSummaries([s(4, 1), s(1, 2)]);
    assert.equal(merged.stats.counted, 3);
    assert.equal(merged.counters, 4);
    assert.deepEqual(
      merged.partitions.map((p) => p.partition),
      [1, 4],
    );
  });
});
