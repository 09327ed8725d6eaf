/**
 * The pieces of a region's rollups together, on two real regions and a real MirrorMaker 2: usage on
 * east, east's aggregator with --rollups, and on west the mirrored `east.quota.rollup` holding east's
 * true totals (the largest per counter and bucket equals a ground truth from the events), which
 * `quotaflow regions` on west reports.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { regionStatus } from '../../src/cli/regions.ts';
import { decodeRollup, type UsageEvent } from '../../src/events/index.ts';
import { kafkaPort } from '../../src/kafka/client.ts';
import type { IncomingRecord } from '../../src/kafka/port.ts';
import { topicNames } from '../../src/kafka/topics.ts';
import { configureLogging } from '../../src/log.ts';
import { programsFrom } from '../../src/stack/prereqs.ts';
import { startLocalRegions } from '../../src/stack/regions.ts';
import { openUsageStore } from '../../src/store/index.ts';
import { testKafkaClient, uniqueName } from '../support/integration.ts';
import { waitFor } from '../support/wait.ts';
import { asRecord, groundTruth, policyFromText, produceUsage, readUntil, usage } from '../support/aggregator.ts';

configureLogging({ level: 'warn' });

const POLICY = `
version: "regions"
product: regions test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 100000, window: 60s }, { limit: 1000000, window: 1h }] }
`;

test("east's aggregator publishes rollups; west holds east's true totals under east.quota.rollup", { timeout: 300_000 }, async (t) => {
  const prefix = `${uniqueName('rr')}.`;
  const topics = topicNames(prefix);
  const stack = await startLocalRegions({ programs: programsFrom(process.env), names: ['east', 'west'], topicPrefix: prefix, quickStart: true });
  try {
    const [east, west] = stack.regions as [(typeof stack.regions)[0], (typeof stack.regions)[0]];
    const port = (brokers: string[]) => kafkaPort({ brokers, clientId: uniqueName('it-rr'), client: testKafkaClient(), minLogLevel: 'error' });
    const eastKafka = port(east.brokers);
    const westKafka = port(west.brokers);
    const { policy } = await policyFromText(POLICY);

    const store = await openUsageStore(east.redisUrl, { keyPrefix: 'qf:' });
    const aggregator = new Aggregator({
      kafka: eastKafka,
      store,
      policy,
      topics,
      groupId: uniqueName('rr-group'),
      region: 'east',
      tickMs: 50,
      rollups: { everyMs: 100 },
    });
    await aggregator.start();
    const now = Date.now();
    const events: UsageEvent[] = [];
    for (let i = 0; i < 5_000; i++) events.push(usage(`e${(i * 31) % 50}`, now - 10_000 + (i % 10_000), { cost: 1 + (i % 3) }));
    try {
      await produceUsage(eastKafka, topics.usage, events.map(asRecord));
      await waitFor('east to count every event', () => aggregator.stats.committed >= events.length, { timeoutMs: 120_000, everyMs: 100 });
    } finally {
      await aggregator.stop(); // its last rollups go out before it stops
      await store.close();
    }
    const sent = aggregator.stats.rollups;
    t.diagnostic(`east published ${sent} rollups`);

    // West: every one of them, mirrored; the largest total per counter and bucket is east's truth.
    const mirrored = await readUntil(westKafka, `east.${topics.rollup}`, (rs) => rs.length >= sent, 120_000, 'east rollups on west');
    const totals = new Map<string, Map<string, number>>();
    for (const r of mirrored as IncomingRecord[]) {
      const d = decodeRollup(r.value);
      assert.ok(d.ok);
      assert.equal(d.rollup.region, 'east');
      let m = totals.get(d.rollup.counterKey);
      if (!m) totals.set(d.rollup.counterKey, (m = new Map()));
      const bucket = `${d.rollup.bucketMs}:${d.rollup.bucketIndex}`;
      m.set(bucket, Math.max(m.get(bucket) ?? 0, d.rollup.total));
    }
    assert.deepEqual(
      totals,
      groundTruth(policy, events, (ms, index) => `${ms}:${index}`),
    );

    const status = await regionStatus(westKafka, prefix, 5 * 60_000, Date.now());
    const fromEast = status.find((s) => s.region === 'east')!;
    assert.equal(fromEast.counters, 50);
    assert.equal(fromEast.records, mirrored.length);
    assert.ok(fromEast.lagMs !== null && fromEast.lagMs < 120_000, `lag ${fromEast.lagMs} ms`);
  } finally {
    await stack.stop();
  }
});
