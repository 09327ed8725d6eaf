/**
 * Replay: `quotaflow replay` reading the same backlog again, in a child process as the command does:
 * --dry-run (the fold alone) and --rebuild (the fold, then the write into an empty Redis prefix).
 */
import { counterTtlMs } from '../../../src/fold/context.ts';
import { kafkaPort } from '../../../src/kafka/client.ts';
import { topicNames } from '../../../src/kafka/topics.ts';
import { compilePolicy, parsePolicyText } from '../../../src/policy/index.ts';
import { replayUsage, writeFold } from '../../../src/replay/index.ts';
import { openUsageStore } from '../../../src/store/index.ts';
import { int, median } from '../common/figures.ts';
import { us } from './format.ts';
import type { ChildMessage, ReplayBench, ReplayTask } from './tasks.ts';

/** A replay's events/s, from its start (planning and the reader's start included) to the end of its fold and write. */
export const replayEps = (r: ReplayBench) => (r.events * 1000) / (r.foldMs + r.writeMs);

export async function runReplay(task: ReplayTask, signal: AbortSignal): Promise<ReplayBench> {
  const kafka = kafkaPort({ brokers: task.brokers, client: task.client, clientId: 'quotaflow-bench-replay', minLogLevel: 'error' });
  const policy = compilePolicy(parsePolicyText(task.policyText, 'aggregator-bench.yaml'));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const run = await replayUsage({
    kafka,
    topics: topicNames(task.topicPrefix),
    policy,
    from: { kind: 'earliest' },
    workers: task.workers,
    writes: task.mode === 'rebuild',
    signal,
    onProgress: (p) => process.send?.({ type: 'progress', done: p.read, ms: p.elapsedMs } satisfies ChildMessage),
  });
  if (run.aborted) throw new Error('stopped');
  const foldMs = performance.now() - t0;
  if (run.fold.stats.counted !== task.expected) throw new Error(`the replay counted ${run.fold.stats.counted} of ${task.expected} events`);
  let writeMs = 0;
  if (task.mode === 'rebuild') {
    const store = await openUsageStore(task.redisUrl, { keyPrefix: task.keyPrefix });
    try {
      const w0 = performance.now();
      const written = await writeFold(run.fold.partitions, store, counterTtlMs(policy), { signal });
      writeMs = performance.now() - w0;
      if (written.written !== written.tenants)
        throw new Error(`the rebuild wrote ${written.written} of ${written.tenants} tenants (${written.present.length} already there)`);
    } finally {
      await store.close();
    }
  }
  const cpu = process.cpuUsage(cpu0);
  return { events: run.fold.stats.events, foldMs, writeMs, counters: run.fold.counters, cpuMs: (cpu.user + cpu.system) / 1000, workers: run.workers };
}

/** The section's text; its figures are in the drain table, beside the aggregator's. */
export function replayReport(dryRuns: ReplayBench[], oneThread: ReplayBench[], backlog: number): string[] {
  const cpu = (runs: ReplayBench[]) => us(median(runs.map((r) => (r.cpuMs * 1000) / r.events)));
  const workers = int(median(dryRuns.map((r) => r.workers)));
  return [
    '## Replay',
    '',
    `In each run, after the two drains, \`quotaflow replay\` reads the same backlog from the beginning in a child process, as the command does (plan the ranges, join a throwaway group, fold with the aggregator's own counter code, events/s from its start to its end, group join included): ` +
      `**--dry-run** folds only (what a what-if costs before its comparison), on ${workers} worker threads (the default: one per core) and again with \`--workers 0\` (the fold on the thread that reads Kafka); **--rebuild** (first run only) folds, then writes every counter and fence into an empty Redis key prefix in fenced writes of 500 tenants. All counted all ${int(backlog)} events in every run; they are in the table above, as a ratio to the aggregator draining the same backlog in the same run.`,
    '',
    `The main thread reads Kafka and hands each partition's records to the worker that owns the partition, packed into one buffer per batch; the workers decode, resolve and fold. That trades CPU for time: ${cpu(dryRuns)} of CPU per event on ${workers} workers against ${cpu(oneThread)} on the main thread alone (each thread has its own JIT and heap to warm up and collect, and the records are copied once more).`,
    '',
    `What would make it faster: less work per event in the fold (the decode and resolve levers above apply to it as well), and cores: the folding threads scale with them, while the reading thread's share (Kafka fetching and decoding, the bare consumer's CPU per event) stays on one.`,
    '',
  ];
}
