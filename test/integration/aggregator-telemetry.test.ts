/** The aggregator's metrics, read from a real in-memory OpenTelemetry SDK (the API is not mocked). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { metrics } from '@opentelemetry/api';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { openUsageStore } from '../../src/store/index.ts';
import { configureLogging } from '../../src/log.ts';
import { CollectingReader, collect } from '../support/otel.ts';
import { ATTR, METRIC } from '../../src/telemetry/names.ts';
import { deferred, services } from '../support/integration.ts';
import { aggregatorEnv, asRecord, policyFromText, produceUsage, usage } from '../support/aggregator.ts';

configureLogging({ level: 'warn' });

test('events, DLQ reasons, decisions, batch and Redis latency and lag reach the OpenTelemetry SDK', { timeout: 120_000 }, async (t) => {
  const reader = new CollectingReader();
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
  const env = await aggregatorEnv(t, 2);
  const { policy } = await policyFromText(`
version: "otel"
product: telemetry test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 3, window: 60s }] }
`);
  const store = await openUsageStore(services().redisUrl, { keyPrefix: env.keyPrefix });
  const aggregator = new Aggregator({ kafka: env.kafka, store, policy, topics: env.topics, groupId: env.groupId, region: 'test' });
  env.defer(async () => {
    await aggregator.stop();
    await store.close();
  });
  await aggregator.start();

  const now = Date.now();
  const good = Array.from({ length: 10 }, () => asRecord(usage('k1', now)));
  const bad = [
    { key: 'api_key=k1', value: 'not json' },
    { key: 'api_key=k1', value: 'also {not json' },
    { key: 'api_key=k1', value: '{}' },
    { key: 'api_key=k1', value: JSON.stringify({ ...usage('k1', now), cost: 0 }) },
  ];
  const all = deferred('14 events consumed', 60_000);
  aggregator.on('batch', () => aggregator.stats.committed >= 14 && all.resolve());
  await produceUsage(env.kafka, env.topics.usage, [...good, ...bad]);
  await all.promise;

  const { sum, points } = await collect(reader);

  assert.equal(sum(METRIC.aggregatorEvents), 14);
  assert.equal(sum(METRIC.aggregatorDlq, { [ATTR.reason]: 'undecodable' }), 2);
  assert.equal(sum(METRIC.aggregatorDlq, { [ATTR.reason]: 'schema' }), 2);
  assert.equal(sum(METRIC.aggregatorDecisions, { [ATTR.state]: 'block', [ATTR.rule]: 'per-key' }), 1);
  assert.equal(sum(METRIC.aggregatorBreaches), 1, 'the breach opened');
  const batchLatency = points(METRIC.aggregatorBatchLatency);
  assert.ok(batchLatency.length > 0 && batchLatency.every((p) => (p.value as { count: number }).count > 0), 'batch latency recorded');
  assert.ok(points(METRIC.aggregatorRedisLatency).length > 0, 'Redis latency recorded');
  assert.ok(
    points(METRIC.aggregatorLag).some((p) => p.value === 0),
    'lag reported, and caught up',
  );
});
