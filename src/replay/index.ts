/** Replay of quota.usage: rebuild Redis after a loss, or a what-if under another policy (DESIGN §6). */
export { defaultWorkers, replayUsage } from './replay.ts';
export type { ReplayOptions, ReplayRun } from './replay.ts';
export { ReplayFold } from './fold.ts';
export type { FoldedCounter, FoldedPartition, FoldedTenant, FoldOptions, FoldStats, FoldSummary } from './fold.ts';
export { planRanges, readRanges } from './read.ts';
export type { PartitionRange, ReadProgress, ReplayStart } from './read.ts';
export { writeFold } from './rebuild.ts';
export type { RebuildResult } from './rebuild.ts';
export { compareBlocks, summarize } from './compare.ts';
export type { BlockChange, BlockInterval, ComparedBlock } from './compare.ts';
