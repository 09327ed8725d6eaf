/**
 * An aggregator with --rollups publishes the region's own total of every bucket it changed to
 * quota.rollup (src/aggregator/rollups.ts): the largest total per counter and bucket equals a ground
 * truth computed from the events alone, and an aggregator that loads a tenant its predecessor
 * counted publishes that tenant's totals again (its predecessor may have died before it could).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { decodeRollup, type UsageEvent } from '../../src/events/index.ts';
import { configureLogging } from '../../src/log.ts';
import { openUsageStore } from '../../src/store/index.ts';
import type { CompiledPolicy } from '../../src/policy/index.ts';
import { deferred, services } from '../support/integration.ts';
import { aggregatorEnv, asRecord, groundTruth, policyFromText, produceUsage, readUntil, usage, type AggregatorTestEnv } from '../support/aggregator.ts';
import type { IncomingRecord } from '../../src/kafka/port.ts';

configureLogging({ level: 'warn' });

const POLICY = `
version: "rollups"
product: rollups test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 100000, window: 60s }, { limit: 1000000, window: 1h }] }
`;

async function startAggregator(env: AggregatorTestEnv, policy: CompiledPolicy) {
  const store = await openUsageStore(services().redisUrl, { keyPrefix: env.keyPrefix });
  const aggregator = new Aggregator({
    kafka: env.kafka,
    store,
    policy,
    topics: env.topics,
    groupId: env.groupId,
    region: 'east',
    sessionTimeoutMs: 10_000,
    tickMs: 50,
    rollups: { everyMs: 50 },
  });
  const stop = async () => {
    await aggregator.stop();
    await store.close();
  };
  env.defer(stop);
  await aggregator.start();
  return { aggregator, stop };
}

function committed(aggregator: Aggregator, n: number, timeoutMs: number): Promise<void> {
  const d = deferred(`${n} events committed`, timeoutMs);
  const check = () => aggregator.stats.committed >= n && d.resolve();
  aggregator.on('batch', check);
  check();
  return d.promise.finally(() => aggregator.off('batch', check));
}

/** Per counter, per `bucketMs:bucketIndex`, the largest total published (what a reader keeps), and how many records said it. */
function largest(records: readonly IncomingRecord[]) {
  const totals = new Map<string, Map<string, number>>();
  const seen = new Map<string, number>();
  for (const r of records) {
    const d = decodeRollup(r.value);
    assert.ok(d.ok, `a rollup record: ${'detail' in d ? d.detail : ''}`);
    const { rollup } = d;
    assert.equal(rollup.region, 'east');
    assert.equal(r.key?.toString(), `${rollup.bucketMs}:${rollup.bucketIndex}:${rollup.counterKey}`);
    let m = totals.get(rollup.counterKey);
    if (!m) totals.set(rollup.counterKey, (m = new Map()));
    const bucket = `${rollup.bucketMs}:${rollup.bucketIndex}`;
    m.set(bucket, Math.max(m.get(bucket) ?? 0, rollup.total));
    seen.set(`${rollup.counterKey} ${bucket}`, (seen.get(`${rollup.counterKey} ${bucket}`) ?? 0) + 1);
  }
  return { totals, seen };
}

test('rollups: the largest total per counter and bucket is the ground truth; a new owner publishes what it loads', { timeout: 240_000 }, async (t) => {
  const env = await aggregatorEnv(t, 6);
  const { policy } = await policyFromText(POLICY);
  const now = Date.now();
  const events: UsageEvent[] = [];
  // 300 keys, event times over the last 20 s: several 1 s buckets per key, and the current minute.
  for (let i = 0; i < 30_000; i++) events.push(usage(`k${(i * 7919) % 300}`, now - 20_000 + (i % 20_000), { cost: 1 + (i % 2) }));
  const truth = groundTruth(policy, events, (ms, index) => `${ms}:${index}`);
  const buckets = [...truth.values()].reduce((n, m) => n + m.size, 0);

  const first = await startAggregator(env, policy);
  await produceUsage(env.kafka, env.topics.usage, events.map(asRecord), 5_000);
  await committed(first.aggregator, events.length, 120_000);
  await first.stop(); // its last flush goes out before it stops
  t.diagnostic(`${first.aggregator.stats.rollups} rollup records for ${buckets} buckets of ${truth.size} counters`);

  const all = (n: number) => (records: IncomingRecord[]) => records.length >= n;
  const published = await readUntil(env.kafka, env.topics.rollup, all(first.aggregator.stats.rollups), 60_000, 'the first aggregator rollups');
  assert.ok(first.aggregator.stats.rollups > 0);
  assert.deepEqual(largest(published).totals, truth, 'the largest total of every bucket is what the events add up to, and nothing else is published');

  // A second aggregator (fresh memory) gets one more event of k7: it loads k7 from Redis and
  // publishes every bucket of it again, the old ones with their totals as they were.
  const second = await startAggregator(env, policy);
  const extra = usage('k7', now - 500);
  await produceUsage(env.kafka, env.topics.usage, [asRecord(extra)]);
  await committed(second.aggregator, 1, 60_000);
  await second.stop();
  const after = await readUntil(env.kafka, env.topics.rollup, all(published.length + second.aggregator.stats.rollups), 60_000, 'the second aggregator rollups');
  const k7 = [...groundTruth(policy, [extra], (ms, index) => `${ms}:${index}`).keys()][0]!;
  const { totals, seen } = largest(after);
  const k7Truth = groundTruth(policy, [...events, extra], (ms, index) => `${ms}:${index}`).get(k7)!;
  assert.deepEqual(totals.get(k7), k7Truth, 'k7 with the extra event counted once');
  for (const bucket of truth.get(k7)!.keys()) assert.ok(seen.get(`${k7} ${bucket}`)! >= 2, `${bucket} of k7 published again by its new owner`);
  assert.equal(second.aggregator.stats.rollups, k7Truth.size, 'the second aggregator published k7 only: the tenant it loaded');
});
