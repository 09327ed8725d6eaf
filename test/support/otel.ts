/**
 * Reading metrics back from a real in-memory OpenTelemetry SDK: a reader that collects on demand, and
 * the data points by metric name with a sum filtered by attributes.
 */
import { MetricReader, type DataPoint } from '@opentelemetry/sdk-metrics';

export class CollectingReader extends MetricReader {
  protected override async onForceFlush(): Promise<void> {}
  protected override async onShutdown(): Promise<void> {}
}

export interface CollectedMetrics {
  /** Data points of one metric (empty when it never recorded). */
  points(name: string): DataPoint<unknown>[];
  /** Sum of a counter's or gauge's values over the points carrying every given attribute. */
  sum(name: string, attrs?: Record<string, string>): number;
}

export async function collect(reader: MetricReader): Promise<CollectedMetrics> {
  const { resourceMetrics } = await reader.collect();
  const byName = new Map(resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).map((m) => [m.descriptor.name, m.dataPoints as DataPoint<unknown>[]]));
  const points = (name: string) => byName.get(name) ?? [];
  return {
    points,
    sum: (name, attrs = {}) =>
      points(name)
        .filter((p) => Object.entries(attrs).every(([k, v]) => p.attributes[k] === v))
        .reduce((n, p) => n + Number(p.value), 0),
  };
}
