/**
 * Whether the aggregator should count an event at all (DESIGN §3): events older than the longest
 * window are late and dropped (counted as late); events too far ahead of the clock go to the DLQ.
 */

/** `on-time`: count it. `late`: it can no longer count in any window. `future`: beyond the skew tolerance. */
export type EventTiming = 'on-time' | 'late' | 'future';

export interface LatenessBounds {
  /** How far event time has progressed (e.g. the newest event time folded so far), epoch ms. */
  watermark: number;
  /** The longest window of any rule, ms. */
  longestWindowMs: number;
  /**
   * That window's bucket width, ms (default 1: exact ms). With buckets, an event is late once its
   * bucket has left the window at the watermark, matching what a RollingCounter can still hold.
   */
  bucketMs?: number;
  /** How far ahead of `now` an event time may be before it is refused, ms. */
  futureSkewMs: number;
  /** The aggregator's injected clock, epoch ms, for the future check; default: the watermark. */
  now?: number;
}

/**
 * Late when t's bucket is at or before floor(watermark / B) - n (with B = 1: t <= watermark - longest);
 * future when t > now + futureSkewMs. Late wins if both somehow hold.
 */
export function lateness(t: number, bounds: LatenessBounds): EventTiming {
  const bucketMs = bounds.bucketMs ?? 1;
  const n = bounds.longestWindowMs / bucketMs;
  if (Math.floor(t / bucketMs) <= Math.floor(bounds.watermark / bucketMs) - n) return 'late';
  if (t > (bounds.now ?? bounds.watermark) + bounds.futureSkewMs) return 'future';
  return 'on-time';
}
