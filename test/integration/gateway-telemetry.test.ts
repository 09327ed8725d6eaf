/** The gateway's metrics, read from a real in-memory OpenTelemetry SDK (the API is not mocked), with a real broker. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { metrics } from '@opentelemetry/api';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { Gateway } from '../../src/gateway/gateway.ts';
import { configureLogging } from '../../src/log.ts';
import { CollectingReader, collect } from '../support/otel.ts';
import { ATTR, METRIC } from '../../src/telemetry/names.ts';
import type { Decision } from '../../src/events/index.ts';
import { aggregatorEnv, policyFromText } from '../support/aggregator.ts';
import { waitFor } from '../support/wait.ts';

configureLogging({ level: 'warn' });

test('checks by outcome, refusals by rule, cached blocks, decision lag, buffered and dropped events reach the OpenTelemetry SDK', {
  timeout: 120_000,
}, async (t) => {
  const reader = new CollectingReader();
  metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }));
  t.after(() => metrics.disable());
  const env = await aggregatorEnv(t, 1);
  const { policy } = await policyFromText(`
version: "otel-gw"
product: gateway telemetry test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 3, window: 60s }] }
`);
  // A buffer of 5 and a linger long enough that nothing is sent while the checks run: drops are certain.
  // One event per request (no coalescing), and none sent early for nearing the limit, so the buffer fills.
  const gateway = new Gateway({
    policy,
    kafka: env.gatewayKafka,
    topicPrefix: env.topicPrefix,
    maxBuffered: 5,
    lingerMs: 60_000,
    followOverrides: false,
    coalesce: false,
    urgentShare: Number.POSITIVE_INFINITY,
  });
  env.defer(() => gateway.stop(1_000));
  gateway.start();
  await gateway.whenWarm();

  const check = (key: string) => gateway.check({ method: 'GET', path: '/x', headers: { 'x-api-key': key } });
  for (let i = 0; i < 5; i++) check('k1'); // 3 admitted, 2 refused on its own count
  check(''); // unresolved: no API key

  // A block decided elsewhere arrives through the topic: cache size and decision lag.
  const decidedAt = Date.now();
  const block: Decision = {
    schemaVersion: 1,
    counterKey: '{api_key=k2}:rule=per-key:api_key=k2',
    tenant: 'api_key=k2',
    rule: 'per-key',
    window: '60s',
    windowMs: 60_000,
    windowKind: 'rolling',
    state: 'block',
    until: decidedAt + 60_000,
    limit: 3,
    observed: 3,
    message: 'Too Many Requests',
    policyVersion: 'otel-gw',
    region: 'test',
    decidedAt,
  };
  const producer = env.kafka.producer();
  await producer.connect();
  await producer.send([{ topic: env.topics.decisions, key: block.counterKey, value: JSON.stringify(block) }]);
  await producer.disconnect();
  await waitFor('the block to reach the gateway', () => check('k2').reason === 'blocked', { timeoutMs: 20_000, everyMs: 50 });

  const checksAtCollect = gateway.stats.checks;
  const { sum, points } = await collect(reader);

  assert.equal(sum(METRIC.gatewayChecks, { [ATTR.outcome]: 'local-limit' }), 2);
  assert.equal(sum(METRIC.gatewayChecks, { [ATTR.outcome]: 'unresolved' }), 1);
  assert.ok(sum(METRIC.gatewayChecks, { [ATTR.outcome]: 'admitted' }) >= 3, 'k1 three times, k2 until the block arrived');
  assert.ok(sum(METRIC.gatewayChecks, { [ATTR.outcome]: 'blocked' }) >= 1);
  assert.equal(
    sum(METRIC.gatewayRefusals, { [ATTR.rule]: 'per-key' }),
    sum(METRIC.gatewayChecks, { [ATTR.outcome]: 'local-limit' }) + sum(METRIC.gatewayChecks, { [ATTR.outcome]: 'blocked' }),
  );
  // The gateway tallies checks and adds them to the SDK's counters as it collects: once each.
  const again = await collect(reader);
  assert.equal(again.sum(METRIC.gatewayChecks, { [ATTR.outcome]: 'local-limit' }), 2, 'a second collection counts nothing twice');
  assert.equal(again.sum(METRIC.gatewayChecks), sum(METRIC.gatewayChecks) + (gateway.stats.checks - checksAtCollect));
  assert.equal(sum(METRIC.gatewayCacheSize), 1, 'one block cached');
  assert.equal(sum(METRIC.gatewayBufferDepth), 5, 'the buffer is full');
  assert.equal(sum(METRIC.gatewayDrops), gateway.emitter!.stats.dropped);
  assert.ok(gateway.emitter!.stats.dropped > 0, 'events past the bound were dropped');
  const lag = points(METRIC.gatewayDecisionLag);
  assert.equal(
    lag.reduce((n, p) => n + (p.value as { count: number }).count, 0),
    1,
    'one decision applied, its lag recorded',
  );
});
