/**
 * The OpenTelemetry SDK, for entry points only: libraries record through @opentelemetry/api and
 * never import this file. Nothing here runs at import time; globals are installed by
 * `startTelemetry` and released by its `shutdown`, so a test can install its own provider instead.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { metrics, propagation, trace } from '@opentelemetry/api';
import { ExportResultCode, W3CTraceContextPropagator, hrTimeToMilliseconds, type ExportResult } from '@opentelemetry/core';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, SimpleSpanProcessor, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { QuotaflowError } from '../errors.ts';
import { logger, type Logger } from '../log.ts';

export const METRICS_PATH = '/metrics';

export interface TelemetryOptions {
  /** The `service.name` resource attribute (e.g. `quotaflow-aggregator`). */
  service: string;
  /** Serve Prometheus text on this port at /metrics; 0 picks a free port; undefined serves nothing. */
  metricsPort?: number;
  /** The interface to listen on (default: all of them, so a Prometheus server elsewhere can scrape). */
  metricsHost?: string;
  /** `log` records spans and logs each one at debug level; `none` (default) records no spans. */
  traces?: 'none' | 'log';
}

export interface Telemetry {
  /** Where Prometheus can scrape, with the port actually bound; undefined when no endpoint was asked for. */
  metricsUrl?: string;
  /** Flushes and stops everything started here, and releases the globals. Safe to call more than once. */
  shutdown(): Promise<void>;
}

/**
 * Carries trace context in W3C `traceparent` / `tracestate` headers, so Kafka message headers can
 * link a usage event's span to the request that caused it. Returns false if a propagator was
 * already installed in this process (that one stays).
 */
export function installTraceContextPropagation(): boolean {
  return propagation.setGlobalPropagator(new W3CTraceContextPropagator());
}

export async function startTelemetry(opts: TelemetryOptions): Promise<Telemetry> {
  const log = logger('telemetry');
  const resource = resourceFromAttributes({ 'service.name': opts.service });
  // Undone in reverse order by shutdown, and on a failed start.
  const undo: Array<() => Promise<void> | void> = [];
  const release = async () => {
    for (const step of undo.splice(0).reverse()) await step();
  };

  let metricsUrl: string | undefined;
  try {
    if (opts.metricsPort !== undefined) {
      const port = opts.metricsPort;
      if (!Number.isInteger(port) || port < 0 || port > 65_535) {
        throw new QuotaflowError('CONFIG_INVALID', `metrics port ${port} is not a port number`, {
          hint: 'give an integer from 0 to 65535 (0 picks a free port)',
        });
      }
      // The exporter's own server treats port 0 as "use 9464" and hides the bound address, so we
      // listen ourselves and hand it the requests.
      const exporter = new PrometheusExporter({ preventServerStart: true });
      const server = createServer((req, res) => {
        if (new URL(req.url ?? '/', 'http://x').pathname === METRICS_PATH) return exporter.getMetricsRequestHandler(req, res);
        res.statusCode = 404;
        res.end();
      });
      const bound = await listen(server, port, opts.metricsHost);
      undo.push(() => closeServer(server));
      metricsUrl = `http://${urlHost(opts.metricsHost)}:${bound}${METRICS_PATH}`;

      const meterProvider = new MeterProvider({ resource, readers: [exporter] });
      undo.push(() => meterProvider.shutdown());
      if (!metrics.setGlobalMeterProvider(meterProvider)) throw alreadyInstalled('meter provider');
      undo.push(() => metrics.disable());
    }

    if (opts.traces === 'log') {
      const tracerProvider = new BasicTracerProvider({ resource, spanProcessors: [new SimpleSpanProcessor(new LogSpanExporter(log.child('span')))] });
      undo.push(() => tracerProvider.shutdown());
      if (!trace.setGlobalTracerProvider(tracerProvider)) throw alreadyInstalled('tracer provider');
      undo.push(() => trace.disable());
    }

    if (installTraceContextPropagation()) undo.push(() => propagation.disable());
  } catch (e) {
    await release();
    throw e;
  }

  let stopped: Promise<void> | undefined;
  return {
    metricsUrl,
    shutdown: () => (stopped ??= release()),
  };
}

function listen(server: Server, port: number, host: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const where = `${host ?? 'all interfaces'} port ${port}`;
      if (e.code === 'EADDRINUSE') {
        reject(
          new QuotaflowError('PORT_IN_USE', `the metrics endpoint cannot listen on ${where}: the port is already taken.`, {
            hint: `stop whatever listens on ${port} (\`ss -ltnp 'sport = :${port}'\` shows it), or pass another --metrics-port (0 picks a free one)`,
            cause: e,
          }),
        );
      } else {
        reject(
          new QuotaflowError('SERVICE_START_FAILED', `the metrics endpoint cannot listen on ${where}: ${e.message}`, {
            hint: e.code === 'EACCES' ? 'ports below 1024 need privileges: pick a port above 1024' : 'check --metrics-port and the metrics host',
            cause: e,
          }),
        );
      }
    });
    server.listen({ port, host }, () => {
      // Like every service quotaflow starts, the endpoint never keeps its process alive by itself.
      server.unref();
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    // A scraper's keep-alive connection would otherwise hold the port open.
    server.closeAllConnections();
  });
}

function urlHost(host: string | undefined): string {
  if (host === undefined || host === '' || host === '0.0.0.0' || host === '::') return 'localhost';
  return host.includes(':') ? `[${host}]` : host;
}

function alreadyInstalled(what: string): QuotaflowError {
  return new QuotaflowError('CONFIG_INVALID', `an OpenTelemetry ${what} is already installed in this process`, {
    hint: 'start telemetry once per process, from its entry point, and shut it down before starting it again',
  });
}

/** Logs each finished span at debug level: enough to follow batches in a terminal without a collector. */
class LogSpanExporter implements SpanExporter {
  constructor(private readonly log: Logger) {}

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    for (const span of spans) {
      const { traceId, spanId } = span.spanContext();
      this.log.debug(span.name, {
        traceId,
        spanId,
        parentSpanId: span.parentSpanContext?.spanId,
        durationMs: hrTimeToMilliseconds(span.duration),
        status: span.status.code,
        attributes: span.attributes,
      });
    }
    done({ code: ExportResultCode.SUCCESS });
  }

  async shutdown(): Promise<void> {}
}
