/**
 * One results file for several Kafka clients: ops/bench/run.ts runs a benchmark once per client,
 * each run writing its own report, and this puts them side by side in one file, a section per client
 * with the client named in its heading.
 */
import type { KafkaClientName } from '../../../src/kafka/port.ts';

export interface ClientRun {
  client: KafkaClientName;
  /** The run's report, when it wrote one. */
  report?: string;
  /** Why it wrote none. */
  failure?: string;
}

/** The combined report, or undefined when no client's run wrote one. */
export function perClientReport(runs: readonly ClientRun[], typed: string): string[] | undefined {
  const first = runs.find((r) => r.report !== undefined);
  if (!first) return undefined;
  const title = first.report!.split('\n', 1)[0]!;
  const lines = [
    title,
    '',
    `\`${typed}\` ran this benchmark once per Kafka client (${runs.map((r) => r.client).join(', ')}), one after the other, each on its own stack and with its own same-run baselines. ` +
      "Each section below is one client's whole report: compare within a section first (ratios to its baselines), then across them.",
    '',
  ];
  for (const run of runs) {
    lines.push(`## Kafka client: ${run.client}`, '');
    if (run.report === undefined) {
      lines.push(`Not measured: the run failed${run.failure ? ` (${run.failure})` : ''}.`, '');
      continue;
    }
    // Below the client's heading: the report without its title, every heading one level down.
    const body = run.report.split('\n').slice(1);
    while (body[0] === '') body.shift();
    lines.push(...body.map((l) => (l.startsWith('#') ? `#${l}` : l)));
  }
  return lines;
}
