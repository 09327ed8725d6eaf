/**
 * Replay: read a range of quota.usage and fold it as the aggregators do (see fold.ts). What to do with
 * the fold is the caller's: write it into an empty Redis (rebuild.ts), or compare its blocks with
 * those decided (compare.ts).
 */
import { availableParallelism } from 'node:os';
import type { KafkaPort } from '../kafka/port.ts';
import type { CompiledOverride, CompiledPolicy } from '../policy/index.ts';
import type { TopicNames } from '../kafka/topics.ts';
import { DEFAULT_NEAR_RATIO, decisionContext, longestWindowMs } from '../fold/context.ts';
import { emptyStats, ReplayFold, type FoldSummary } from './fold.ts';
import { planRanges, readRanges, type PartitionRange, type ReadProgress, type ReplayStart } from './read.ts';
import { FoldThreads, MAX_WORKERS } from './threads.ts';

export interface ReplayOptions {
  kafka: KafkaPort;
  topics: TopicNames;
  policy: CompiledPolicy;
  from: ReplayStart;
  /** Stop at this time (default: the end each partition has when the replay starts). */
  to?: number;
  /** Runtime overrides to count under (quota.overrides as it is now), by scope key. */
  overrides?: ReadonlyMap<string, CompiledOverride>;
  collectBreaches?: boolean;
  /** Keep each counter's store write in the result (what `writeFold` needs: a rebuild). */
  writes?: boolean;
  region?: string;
  nearRatio?: number;
  /** The wall clock: blocks lapse up to it (or up to `to`) at the end. */
  now?: number;
  /**
   * Worker threads that fold partitions while this thread reads Kafka (never more than partitions
   * to read); 0 folds on this thread. Default: `defaultWorkers()`.
   */
  workers?: number;
  signal?: AbortSignal;
  onProgress?: (p: ReadProgress) => void;
}

export interface ReplayRun {
  fold: FoldSummary;
  ranges: PartitionRange[];
  read: number;
  aborted: boolean;
  elapsedMs: number;
  /** The instant blocks were lapsed up to. */
  endAt: number;
  /** Worker threads that folded (0: the fold ran on the calling thread). */
  workers: number;
}

/** What a stopped replay returns: nothing of a fold that did not reach its end is used. */
const emptySummary = (): FoldSummary => ({ stats: emptyStats(), counters: 0, breaches: [], partitions: [] });

/**
 * One worker per core, none on a single core (there the reading thread would only compete with
 * it). On 2 cores, 2 workers fold a 1,000,000-event backlog ~1.3x faster than the reading thread
 * alone, for more CPU per event (ops/bench/results/aggregator.md).
 */
export function defaultWorkers(cores = availableParallelism()): number {
  return cores <= 1 ? 0 : Math.min(cores, MAX_WORKERS);
}

export async function replayUsage(opts: ReplayOptions): Promise<ReplayRun> {
  const started = performance.now();
  const now = opts.now ?? Date.now();
  const region = opts.region ?? 'local';
  const nearRatio = opts.nearRatio ?? DEFAULT_NEAR_RATIO;
  // Worker threads take a moment to load: they start now, while the ranges are planned.
  const wanted = opts.workers ?? defaultWorkers();
  const threads =
    wanted > 0
      ? new FoldThreads(wanted, {
          policy: opts.policy.policy,
          overrides: opts.overrides,
          region,
          nearRatio,
          collectBreaches: opts.collectBreaches ?? false,
          writes: opts.writes ?? false,
          now,
          futureSkewMs: undefined,
        })
      : null;
  try {
    const ranges = await planRanges(opts.kafka, opts.topics.usage, opts.from, opts.to);
    const toRead = ranges.filter((r) => r.end > r.start);
    const endAt = Math.min(opts.to ?? now, now);
    const done = (fold: FoldSummary, read: number, aborted: boolean): ReplayRun => ({
      fold,
      ranges,
      read,
      aborted,
      elapsedMs: performance.now() - started,
      endAt,
      workers: threads?.size ?? 0,
    });

    if (!threads) {
      const fold = new ReplayFold({
        policy: opts.policy,
        ctx: decisionContext(opts.policy, region, nearRatio),
        longestWindowMs: longestWindowMs(opts.policy),
        overrides: opts.overrides,
        collectBreaches: opts.collectBreaches,
        now,
      });
      const { read, aborted } = await readRanges(opts.kafka, opts.topics.usage, ranges, (p, records) => void fold.addBatch(p, records), {
        signal: opts.signal,
        onProgress: opts.onProgress,
      });
      if (aborted) return done(emptySummary(), read, true);
      fold.finish(endAt);
      return done(fold.summary({ writes: opts.writes ?? false }), read, false);
    }

    await threads.assign(toRead);
    const signal = opts.signal ? AbortSignal.any([opts.signal, threads.failed]) : threads.failed;
    const { read, aborted } = await readRanges(opts.kafka, opts.topics.usage, ranges, (p, records) => threads.add(p, records), {
      signal,
      onProgress: opts.onProgress,
    });
    // A worker that failed aborted the read: finish throws its error.
    if (aborted && !threads.failed.aborted) return done(emptySummary(), read, true);
    return done(await threads.finish(endAt), read, false);
  } finally {
    await threads?.close();
  }
}
