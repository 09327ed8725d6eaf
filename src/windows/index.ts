/**
 * The window arithmetic: durations, window specs, counts over buckets, `until` and `reset`, the
 * in-memory RollingCounter, and lateness. Pure: no I/O, no clock; every time is an argument (epoch ms).
 */
export { parseDuration, formatDuration } from './duration.ts';
export {
  windowSpec,
  defaultBucketMs,
  bucketsIn,
  bucketOf,
  describeWindow,
  windowName,
  DEFAULT_BUCKETS_PER_WINDOW,
  MAX_BUCKETS_PER_WINDOW,
} from './spec.ts';
export type { WindowSpec, WindowKind, WindowOptions } from './spec.ts';
export {
  recordUsage,
  pruneBuckets,
  count,
  until,
  resetTime,
  limitState,
  ruleUntil,
  ruleState,
} from './buckets.ts';
export type { Buckets, WindowLimit, CountedLimit, LimitState, RuleState } from './buckets.ts';
export { RollingCounter, CounterLayout } from './counter.ts';
export { lateness } from './lateness.ts';
export type { EventTiming, LatenessBounds } from './lateness.ts';
