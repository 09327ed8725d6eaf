/**
 * A gateway's check made inside a span carries that span's trace context on its usage event (Kafka
 * message headers, W3C traceparent), and the aggregator's batch span links back to it. Real
 * OpenTelemetry SDK pieces (tracer provider, in-memory exporter, AsyncLocalStorage context manager),
 * a real broker and Redis.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { context, propagation, trace } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { Gateway } from '../../src/gateway/gateway.ts';
import { openUsageStore } from '../../src/store/index.ts';
import { configureLogging } from '../../src/log.ts';
import { SPAN } from '../../src/telemetry/names.ts';
import { deferred, services } from '../support/integration.ts';
import { aggregatorEnv, policyFromText } from '../support/aggregator.ts';

configureLogging({ level: 'warn' });

test('the aggregator batch span links to the spans of the gateway checks that produced its events', { timeout: 120_000 }, async (t) => {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  trace.setGlobalTracerProvider(provider);
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  t.after(async () => {
    await provider.shutdown();
    trace.disable();
    propagation.disable();
    context.disable();
  });

  const env = await aggregatorEnv(t, 1);
  const { policy } = await policyFromText(`
version: "trace"
product: trace test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 100, window: 60s }] }
`);
  const store = await openUsageStore(services().redisUrl, { keyPrefix: env.keyPrefix });
  const aggregator = new Aggregator({ kafka: env.kafka, store, policy, topics: env.topics, groupId: env.groupId, region: 'test' });
  const gateway = new Gateway({ policy, kafka: env.gatewayKafka, topicPrefix: env.topicPrefix, followOverrides: false });
  env.defer(async () => {
    await gateway.stop();
    await aggregator.stop();
    await store.close();
  });
  await aggregator.start();
  gateway.start();

  const tracer = trace.getTracer('test-http-server');
  const traced: string[] = [];
  for (let i = 0; i < 3; i++) {
    tracer.startActiveSpan('GET /v1/calls', (span) => {
      const result = gateway.check({ method: 'GET', path: '/v1/calls', headers: { 'x-api-key': 'k-traced' } });
      assert.equal(result.allowed, true);
      traced.push(span.spanContext().traceId);
      span.end();
    });
  }
  // Outside any span: no trace context, no link.
  gateway.check({ method: 'GET', path: '/v1/calls', headers: { 'x-api-key': 'k-untraced' } });

  const counted = deferred('4 events counted', 60_000);
  aggregator.on('batch', () => aggregator.stats.committed >= 4 && counted.resolve());
  await counted.promise;

  const batches = exporter.getFinishedSpans().filter((s) => s.name === SPAN.aggregatorBatch);
  assert.ok(batches.length > 0, 'the aggregator recorded batch spans');
  const linked = batches.flatMap((s) => s.links.map((l) => l.context.traceId));
  assert.deepEqual([...linked].sort(), [...traced].sort(), 'one link per traced check, to its trace; none for the untraced one');
});
