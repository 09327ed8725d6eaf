/**
 * The SDK the entry points install: a Prometheus endpoint read over real HTTP, spans logged at debug,
 * W3C trace context. No Kafka or Redis. The tests run one after another in this process, so each
 * one shuts its telemetry down (which also releases the OpenTelemetry globals for the next).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { context, metrics, propagation, trace } from '@opentelemetry/api';
import { isQuotaflowError } from '../../src/errors.ts';
import { configureLogging } from '../../src/log.ts';
import { METER, TRACER } from '../../src/telemetry/names.ts';
import { startTelemetry } from '../../src/telemetry/sdk.ts';

configureLogging({ level: 'warn' });

const HOST = '127.0.0.1';

async function scrape(url: string): Promise<string> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  return res.text();
}

test("serves the global meter's counters as Prometheus text on a free port", async (t) => {
  const telemetry = await startTelemetry({ service: 'quotaflow-test', metricsPort: 0, metricsHost: HOST });
  t.after(() => telemetry.shutdown());
  assert.ok(telemetry.metricsUrl, 'a metrics URL is reported');
  const url = new URL(telemetry.metricsUrl);
  assert.equal(url.hostname, HOST);
  assert.notEqual(url.port, '0', 'the URL names the port actually bound');
  assert.equal(url.pathname, '/metrics');

  const counter = metrics.getMeter(METER).createCounter('quotaflow.test.requests', { description: 'requests seen by the test' });
  counter.add(3, { 'quotaflow.outcome': 'admitted' });
  counter.add(4, { 'quotaflow.outcome': 'admitted' });
  counter.add(1, { 'quotaflow.outcome': 'refused' });

  const sample = (text: string, outcome: string) =>
    text.split('\n').find((l) => l.startsWith('quotaflow_test_requests_total{') && l.includes(`quotaflow_outcome="${outcome}"`)) ?? text;
  const text = await scrape(telemetry.metricsUrl);
  assert.match(sample(text, 'admitted'), / 7$/);
  assert.match(sample(text, 'refused'), / 1$/);
  assert.match(text, /# TYPE quotaflow_test_requests_total counter/);
  assert.match(text, /target_info\{[^}]*service_name="quotaflow-test"/, 'the service.name resource attribute is exported');

  // Cumulative: the next scrape sees the running total.
  counter.add(5, { 'quotaflow.outcome': 'refused' });
  assert.match(sample(await scrape(telemetry.metricsUrl), 'refused'), / 6$/);

  assert.equal((await fetch(new URL('/other', url))).status, 404);
});

test('a taken port is PORT_IN_USE with a hint; shutdown frees the port and can be called twice', async () => {
  const first = await startTelemetry({ service: 'quotaflow-test', metricsPort: 0, metricsHost: HOST });
  const port = Number(new URL(first.metricsUrl!).port);

  await assert.rejects(startTelemetry({ service: 'quotaflow-test', metricsPort: port, metricsHost: HOST }), (e: unknown) => {
    assert.ok(isQuotaflowError(e), String(e));
    assert.equal(e.code, 'PORT_IN_USE');
    assert.match(e.message, new RegExp(`port ${port}\\b`));
    assert.match(e.hint ?? '', /--metrics-port/);
    return true;
  });
  // The failed start left the first one working.
  await scrape(first.metricsUrl!);

  await Promise.all([first.shutdown(), first.shutdown()]);
  await first.shutdown();
  await assert.rejects(fetch(first.metricsUrl!), 'nothing listens after shutdown');

  // The same port, and the global meter provider, are free again.
  const second = await startTelemetry({ service: 'quotaflow-test', metricsPort: port, metricsHost: HOST });
  try {
    assert.equal(second.metricsUrl, first.metricsUrl);
    metrics.getMeter(METER).createCounter('quotaflow.test.again').add(2);
    assert.match(await scrape(second.metricsUrl!), /^quotaflow_test_again_total\{[^}]*\} 2$/m);
  } finally {
    await second.shutdown();
  }
});

test('without a metrics port there is no endpoint; a bad port is refused', async () => {
  const telemetry = await startTelemetry({ service: 'quotaflow-test' });
  assert.equal(telemetry.metricsUrl, undefined);
  await telemetry.shutdown();
  for (const bad of [-1, 65_536, 1.5, Number.NaN]) {
    await assert.rejects(
      startTelemetry({ service: 'quotaflow-test', metricsPort: bad }),
      (e: unknown) => isQuotaflowError(e) && e.code === 'CONFIG_INVALID',
      String(bad),
    );
  }
});

test('traces: log writes each finished span at debug level, and trace context goes out as a traceparent header', async (t) => {
  const lines: string[] = [];
  configureLogging({ level: 'debug', format: 'json', write: (l) => lines.push(l) });
  t.after(() => configureLogging({ level: 'warn', write: (l) => process.stderr.write(l + '\n') }));
  const telemetry = await startTelemetry({ service: 'quotaflow-test', traces: 'log' });
  t.after(() => telemetry.shutdown());

  const span = trace.getTracer(TRACER).startSpan('quotaflow.test.span', { attributes: { 'quotaflow.partition': 3 } });
  const headers: Record<string, string> = {};
  propagation.inject(trace.setSpan(context.active(), span), headers);
  span.end();

  const { traceId, spanId } = span.spanContext();
  assert.equal(headers.traceparent, `00-${traceId}-${spanId}-01`);
  const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => r.msg === 'quotaflow.test.span');
  assert.ok(logged, lines.join('\n'));
  assert.equal(logged.level, 'debug');
  assert.equal(logged.component, 'telemetry.span');
  assert.equal(logged.traceId, traceId);
  assert.deepEqual(logged.attributes, { 'quotaflow.partition': 3 });
  assert.equal(typeof logged.durationMs, 'number');

  await telemetry.shutdown();
  assert.equal(trace.getTracer(TRACER).startSpan('after').isRecording(), false, 'the global tracer provider is released');
});
