/**
 * Drain throughput: in each run, the bare consumer and one Aggregator drain the whole backlog, each
 * in its own child process, in alternating order; then `quotaflow replay` reads it again (replay.ts).
 */
import { topicNames } from '../../../src/kafka/topics.ts';
import { bytes, int, mdTable, median, perSec, type Figure } from '../common/figures.ts';
import { redisInfo } from '../common/redis.ts';
import { fixed, ms, ratio, us } from './format.ts';
import type { CounterBytes } from './counters.ts';
import { PARTITIONS_CONCURRENTLY } from './drain.ts';
import { replayEps } from './replay.ts';
import { runChild, taskBase, type AggregatorBench, type DrainResult, type ReplayBench, type ReplayTask } from './tasks.ts';

export interface RunResult {
  baseline: DrainResult;
  ours: DrainResult;
  redis: { cpuS: number; memory: number } | undefined;
  /** `quotaflow replay` over the same backlog, after the drains of the run. */
  dryRun: ReplayBench;
  /** The same dry run folding on the main thread (--workers 0). */
  dryRunOneThread: ReplayBench;
  /** First run only. */
  rebuild: ReplayBench | undefined;
}

export const eps = (d: DrainResult) => (d.events * 1000) / d.ms;
export const cpuPerEvent = (d: DrainResult) => (d.cpuMs * 1000) / d.events;
export const heapPer = (d: DrainResult, n: number) => (d.after.heap - d.before.heap) / n;
export const heapAbPer = (d: DrainResult, n: number) => (d.after.heap + d.after.arrayBuffers - d.before.heap - d.before.arrayBuffers) / n;
export const rssPer = (d: DrainResult, n: number) => (d.after.rss - d.before.rss) / n;

/** The runs: baseline and ours on the same backlog, alternating which goes first, then the replays. */
export async function drainRuns(bench: AggregatorBench, backlog: number, records = backlog): Promise<RunResult[]> {
  const { services, sizes, ui } = bench;
  const base = taskBase(bench);
  const measureRedis = services.stack.redis.source !== 'external';
  const runs: RunResult[] = [];
  for (let run = 0; run < sizes.runs; run++) {
    const tag = `[run ${run + 1}/${sizes.runs}]`;
    const baselineTask = () =>
      runChild(
        {
          role: 'baseline',
          ...base,
          topic: topicNames(bench.topicPrefix).usage,
          groupId: services.group(`bare-${run}`),
          expected: records, // the bare consumer counts records
        },
        `${tag} bare ${services.client} consumer`,
        ui,
      );
    const oursTask = async (): Promise<{ result: DrainResult; redis: RunResult['redis'] }> => {
      const groupId = services.group(`aggregators-${run}`);
      const info0 = measureRedis ? await redisInfo(services.redis) : undefined;
      const result = await runChild(
        {
          role: 'aggregator',
          ...base,
          redisUrl: services.stack.redisUrl,
          keyPrefix: `${services.redisPrefix}r${run}:`,
          topicPrefix: bench.topicPrefix,
          groupId,
          expected: backlog,
        },
        `${tag} aggregator`,
        ui,
      );
      const info1 = info0 && (await redisInfo(services.redis));
      return { result, redis: info0 && info1 ? { cpuS: info1.cpuS - info0.cpuS, memory: info1.usedMemory - info0.usedMemory } : undefined };
    };
    let baseline: DrainResult;
    let ours: Awaited<ReturnType<typeof oursTask>>;
    if (run % 2 === 0) {
      baseline = await baselineTask();
      ours = await oursTask();
    } else {
      ours = await oursTask();
      baseline = await baselineTask();
    }
    const a = ours.result.agg!;
    if (a.late || a.dlq || a.counted !== backlog) {
      throw new Error(
        `the aggregator counted ${a.counted} of ${backlog} events (${a.late} late, ${a.dlq} to the DLQ): the backlog is not what this benchmark means to measure`,
      );
    }
    const replayTask = (mode: ReplayTask['mode'], workers?: number) =>
      runChild(
        {
          role: 'replay',
          mode,
          ...base,
          redisUrl: services.stack.redisUrl,
          keyPrefix: `${services.redisPrefix}rb${run}:`,
          topicPrefix: bench.topicPrefix,
          expected: backlog,
          workers,
        },
        `${tag} quotaflow replay --${mode}${workers === undefined ? '' : ` --workers ${workers}`}`,
        ui,
      );
    // The rebuild adds the write of every counter to the fold: once is enough (the 10-minute budget).
    const dryRun = await replayTask('dry-run');
    const dryRunOneThread = await replayTask('dry-run', 0);
    const rebuild = run === 0 ? await replayTask('rebuild') : undefined;
    const r: RunResult = { baseline, ours: ours.result, redis: ours.redis, dryRun, dryRunOneThread, rebuild };
    runs.push(r);
    ui.done(
      `${tag} bare consumer ${perSec(eps(r.baseline))}, aggregator ${perSec(eps(r.ours))} (${ratio(r.ours.events / r.ours.ms, r.baseline.events / r.baseline.ms)}), ` +
        `replay --dry-run ${perSec(replayEps(r.dryRun))}${r.rebuild ? `, --rebuild ${perSec(replayEps(r.rebuild))}` : ''}`,
    );
  }
  return runs;
}

/** The drain table: ours against the bare consumer, the replays against ours, then what a drain cost. */
/** `eventsPerRecord` > 1: the backlog is usage batch records, the bare consumer counts records, and the ratio is in records/s. */
export function throughputFigures(runs: RunResult[], alone: CounterBytes, bench: AggregatorBench, eventsPerRecord = 1): Figure[] {
  const m = median;
  const counters = bench.sizes.keys;
  const windowsPerCounter = bench.policy.rules[0]!.limits.length;
  const baseEps = runs.map((r) => eps(r.baseline));
  const oursEps = runs.map((r) => eps(r.ours));
  const agg = runs.map((r) => r.ours.agg!);
  const rebuilds = runs.flatMap((r) => (r.rebuild ? [[r, r.rebuild] as const] : []));
  const baseCpu = m(runs.map((r) => cpuPerEvent(r.baseline)));
  const oursCpu = m(runs.map((r) => cpuPerEvent(r.ours)));
  const redisRuns = runs.filter((r) => r.redis !== undefined);
  const figures: Figure[] = [
    ...(eventsPerRecord === 1
      ? [
          { name: `bare ${bench.services.client} consumer: events/s`, values: baseEps, fmt: perSec, vs: 'baseline' },
          { name: 'aggregator: events/s (until all committed)', values: oursEps, fmt: perSec, vs: `${ratio(m(oursEps), m(baseEps))} of medians` },
          { name: 'ratio aggregator / bare consumer, per run', values: runs.map((r) => eps(r.ours) / eps(r.baseline)), fmt: (n: number) => `${n.toFixed(2)}×` },
        ]
      : [
          { name: `bare ${bench.services.client} consumer: records/s`, values: baseEps, fmt: perSec, vs: 'baseline' },
          {
            name: 'aggregator: records/s (until all committed)',
            values: oursEps.map((x) => x / eventsPerRecord),
            fmt: perSec,
            vs: `${ratio(m(oursEps) / eventsPerRecord, m(baseEps))} of medians`,
          },
          {
            name: 'ratio aggregator / bare consumer in records/s, per run',
            values: runs.map((r) => eps(r.ours) / eventsPerRecord / eps(r.baseline)),
            fmt: (n: number) => `${n.toFixed(2)}×`,
          },
          {
            name: 'aggregator: requests accounted per second (events/s, until all committed)',
            values: oursEps,
            fmt: perSec,
            vs: `${int(eventsPerRecord)} events per record on average`,
          },
        ]),
    {
      name: `quotaflow replay --dry-run (fold only, on ${int(m(runs.map((r) => r.dryRun.workers)))} worker threads: the default): events/s`,
      values: runs.map((r) => replayEps(r.dryRun)),
      fmt: perSec,
      vs: `${ratio(m(runs.map((r) => replayEps(r.dryRun) / eps(r.ours))), 1)} the aggregator (median of per-run ratios); CPU ${us(m(runs.map((r) => (r.dryRun.cpuMs * 1000) / r.dryRun.events)))} per event`,
    },
    {
      name: 'quotaflow replay --dry-run --workers 0 (the fold on the main thread): events/s',
      values: runs.map((r) => replayEps(r.dryRunOneThread)),
      fmt: perSec,
      vs: `${ratio(m(runs.map((r) => replayEps(r.dryRunOneThread) / eps(r.ours))), 1)} the aggregator; the worker threads ${ratio(m(runs.map((r) => replayEps(r.dryRun) / replayEps(r.dryRunOneThread))), 1)} this; CPU ${us(m(runs.map((r) => (r.dryRunOneThread.cpuMs * 1000) / r.dryRunOneThread.events)))} per event`,
    },
    {
      name: 'quotaflow replay --rebuild (fold, then write to Redis), run 1: events/s',
      values: rebuilds.map(([, b]) => replayEps(b)),
      fmt: perSec,
      vs: `${ratio(m(rebuilds.map(([r, b]) => replayEps(b) / eps(r.ours))), 1)} the aggregator; writing ${int(m(rebuilds.map(([, b]) => b.counters)))} counters took ${ms(m(rebuilds.map(([, b]) => b.writeMs)))}`,
    },
    {
      name: 'aggregator: Redis round trips per batch',
      values: agg.map((a) => a.storeRoundTrips / a.batches),
      fmt: fixed(2),
      vs: `loads ${fixed(2)(m(agg.map((a) => a.loads / a.batches)))} + batch writes ${fixed(2)(m(agg.map((a) => a.applies / a.batches)))} + lapse-timer writes ${fixed(2)(m(agg.map((a) => a.metaWrites / a.batches)))}`,
    },
    {
      name: 'aggregator: events per batch',
      values: runs.map((r) => r.ours.events / r.ours.batches),
      fmt: int,
      vs: `bare consumer: ${int(m(runs.map((r) => (r.baseline.events * eventsPerRecord) / r.baseline.batches)))}`,
    },
    {
      name: 'aggregator: store round trip (wall), mean',
      values: storeMsPerBatch(runs),
      fmt: ms,
      vs: `load ${ms(m(agg.map((a) => a.loadMs / a.loads)))}, write ${ms(m(agg.map((a) => a.applyMs / a.applies)))}`,
    },
    {
      name: 'aggregator: CPU per event (process)',
      values: runs.map((r) => cpuPerEvent(r.ours)),
      fmt: us,
      vs:
        eventsPerRecord === 1
          ? `bare consumer: ${us(baseCpu)} (${ratio(oursCpu, baseCpu)})`
          : `bare consumer: ${us(baseCpu)} per record of ~${int(eventsPerRecord)} events`,
    },
    {
      name: 'aggregator: CPU busy (CPU time / wall time)',
      values: runs.map((r) => r.ours.cpuMs / r.ours.ms),
      fmt: (n) => `${(n * 100).toFixed(0)}%`,
      vs: `bare consumer: ${(m(runs.map((r) => r.baseline.cpuMs / r.baseline.ms)) * 100).toFixed(0)}%`,
    },
    {
      name: `aggregator: heap growth per counter (${int(counters)} counters of ${windowsPerCounter} windows)`,
      values: runs.map((r) => heapPer(r.ours, counters)),
      fmt: bytes,
      vs: `bare consumer: ${bytes(m(runs.map((r) => heapPer(r.baseline, counters))))}`,
    },
    {
      name: 'aggregator: heap + ArrayBuffers growth per counter',
      values: runs.map((r) => heapAbPer(r.ours, counters)),
      fmt: bytes,
      vs: `bare consumer: ${bytes(m(runs.map((r) => heapAbPer(r.baseline, counters))))}`,
    },
    {
      name: 'aggregator: RSS growth per counter',
      values: runs.map((r) => rssPer(r.ours, counters)),
      fmt: bytes,
      vs: `bare consumer: ${bytes(m(runs.map((r) => rssPer(r.baseline, counters))))}`,
    },
    {
      name: 'aggregator: held by its counters and tenants at the end, per counter',
      values: runs.map((r) => r.ours.retained! / counters),
      fmt: bytes,
      vs: `built alone: ${bytes(alone.counterState)} (CounterState, tenant entry, keys), its RollingCounter ${bytes(alone.rollingCounter!)}`,
    },
  ];
  if (redisRuns.length) {
    figures.push(
      { name: 'Redis: memory per counter', values: redisRuns.map((r) => r.redis!.memory / counters), fmt: bytes },
      { name: 'Redis: CPU per event (server, Lua included)', values: redisRuns.map((r) => (r.redis!.cpuS * 1e6) / r.ours.events), fmt: us },
    );
  }
  figures.push({
    name: 'decisions published (blocks, near, unblocks)',
    values: agg.map((a) => a.decisions),
    fmt: int,
    vs: `${bench.shape.hotKeys} hot key(s) cross the minute limit`,
  });
  return figures;
}

/** Per run, the wall time of a store round trip, mean. */
export const storeMsPerBatch = (runs: RunResult[]) => runs.map((r) => r.ours.agg!).map((a) => (a.loadMs + a.applyMs) / (a.loads + a.applies));

export function throughputReport(runs: RunResult[], figures: readonly Figure[], bench: AggregatorBench, backlog: number): string[] {
  const a0 = runs[0]!.ours.agg!;
  const { client } = bench.services;
  return [
    '## Drain throughput',
    '',
    `Each run drains the whole backlog twice, in separate child processes (fresh heap and JIT), in alternating order: ` +
      `**baseline**, a bare ${client} consumer through quotaflow's Kafka port, the client the Aggregator uses in the run (new group, fromBeginning, a batch handler that counts the records and commits the batch's last offset as the Aggregator does; the Aggregator's consumer settings: maxBytesPerPartition 4 MiB, ${PARTITIONS_CONCURRENTLY} partitions consumed concurrently, session 30 s); ` +
      `**ours**, one Aggregator (new group, real Redis with a new key prefix so it starts empty; decode and validate, resolve, load the tenants it does not hold, fold, publish decisions, one fenced write per batch, commit). ` +
      'events/s counts from the first batch handed to the code to the last event counted (baseline) or committed (ours). ' +
      `CPU is the child's process.cpuUsage() over that interval. Memory, per counter (a counter: one counter key with its rule's windows, here ${bench.policy.rules[0]!.limits.length} — one CounterState in the aggregator, one hash in Redis; ${int(bench.sizes.keys)} of them, one per API key): heap (heapUsed), heap + ArrayBuffers (the counters' Float64Array rings live outside the heap) and RSS, after − before the drain, each after two GCs (before: the process with its Redis connection, before the consumer starts; after: every counter in memory, the consumer idle); ` +
      "RSS also carries the fetch buffers and the heap's headroom, so it is shown beside the bare consumer's. \"Held by its counters and tenants\": heap + ArrayBuffers freed when the stopped Aggregator's per-partition state (tenants, counters, blocked sets) is dropped, against as many counters built alone in the benchmark's own process (see the memory section). " +
      "Redis memory and CPU: INFO used_memory and used_cpu_user + used_cpu_sys around the aggregator's drain (the local Redis serves only this benchmark).",
    '',
    ...mdTable(figures, 'vs baseline'),
    '',
    `Checks: every run counted all ${int(backlog)} events (0 late, 0 to the DLQ); run 1: ${int(a0.batches)} batches, ${int(a0.loads)} loads, ${int(a0.applies)} batch writes and ${int(a0.metaWrites)} lapse-timer (meta-only) writes, ${int(a0.decisions)} decisions and ${int(a0.breachRecords)} breach records published, ${a0.conflicts} fence conflicts, ${a0.storeFailures} failed store calls, ${a0.crashes} consumer restarts, ${int(a0.skippedBelowFence)} redelivered events skipped below a fence, ${int(a0.consumed)} events decoded in all.`,
    '',
    `Decisions: by the time a run drains the backlog its event times are up to a minute old or older, so a hot key's block (decided on event time) is often past its \`until\` by the wall clock when published; the lapse timer then unblocks it (a meta-only write) and the key's next batch blocks it again: hence ${int(a0.decisions)} decisions for ${bench.shape.hotKeys} hot key(s) and the lapse-timer writes in the round trips — what any aggregator catching up on a lag does.`,
    '',
  ];
}
