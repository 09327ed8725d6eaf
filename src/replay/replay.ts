/**
 * Replay: read a range of quota.usage and fold it as the aggregators do (see fold.ts). What to do with
 * the fold is the caller's: write it into an empty Redis (rebuild.ts), or compare its blocks with
 * those decided (compare.ts).
 */
import type { KafkaPort } from '../kafka/port.ts';
import type { CompiledPolicy, OverrideLookup } from '../policy/index.ts';
import type { TopicNames } from '../kafka/topics.ts';
import { DEFAULT_NEAR_RATIO, decisionContext, longestWindowMs } from '../fold/context.ts';
import { ReplayFold } from './fold.ts';
import { planRanges, readRanges, type PartitionRange, type ReadProgress, type ReplayStart } from './read.ts';

export interface ReplayOptions {
  kafka: KafkaPort;
  topics: TopicNames;
  policy: CompiledPolicy;
  from: ReplayStart;
  /** Stop at this time (default: the end each partition has when the replay starts). */
  to?: number;
  /** Runtime overrides to count under (quota.overrides as it is now). */
  overrides?: OverrideLookup;
  collectBreaches?: boolean;
  region?: string;
  nearRatio?: number;
  /** The wall clock: blocks lapse up to it (or up to `to`) at the end. */
  now?: number;
  signal?: AbortSignal;
  onProgress?: (p: ReadProgress) => void;
}

export interface ReplayRun {
  fold: ReplayFold;
  ranges: PartitionRange[];
  read: number;
  aborted: boolean;
  elapsedMs: number;
  /** The instant blocks were lapsed up to. */
  endAt: number;
}

export async function replayUsage(opts: ReplayOptions): Promise<ReplayRun> {
  const started = performance.now();
  const now = opts.now ?? Date.now();
  const fold = new ReplayFold({
    policy: opts.policy,
    ctx: decisionContext(opts.policy, opts.region ?? 'local', opts.nearRatio ?? DEFAULT_NEAR_RATIO),
    longestWindowMs: longestWindowMs(opts.policy),
    overrides: opts.overrides,
    collectBreaches: opts.collectBreaches,
    now,
  });
  const ranges = await planRanges(opts.kafka, opts.topics.usage, opts.from, opts.to);
  const { read, aborted } = await readRanges(opts.kafka, opts.topics.usage, ranges, (p, records) => fold.addBatch(p, records), {
    signal: opts.signal,
    onProgress: opts.onProgress,
  });
  const endAt = Math.min(opts.to ?? now, now);
  if (!aborted) fold.finish(endAt);
  return { fold, ranges, read, aborted, elapsedMs: performance.now() - started, endAt };
}
