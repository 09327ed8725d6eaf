/**
 * A Window: how long it is, how finely it is bucketed, and whether it rolls or is calendar-aligned.
 * Every count is kept per bucket (index `floor(t / bucketMs)` of the event time), so counts are
 * exact to the bucket and a replay of the same events gives the same numbers.
 */
import { QuotaflowError } from '../errors.ts';
import { formatDuration, parseDuration } from './duration.ts';

export type WindowKind = 'rolling' | 'fixed';

export interface WindowSpec {
  /** Window length, ms; a positive multiple of `bucketMs`. */
  readonly lengthMs: number;
  /** Bucket width, ms. */
  readonly bucketMs: number;
  /** `rolling`: the last `lengthMs / bucketMs` buckets. `fixed`: aligned to epoch multiples of `lengthMs` (UTC). */
  readonly kind: WindowKind;
}

export interface WindowOptions {
  /** Bucket width (ms or a duration like `'1s'`); default: see `defaultBucketMs`. */
  bucketMs?: number | string;
  kind?: WindowKind;
}

/** The default resolution: 60 buckets per window. */
export const DEFAULT_BUCKETS_PER_WINDOW = 60;

/**
 * Ceiling on buckets per window: a counter keeps one slot per bucket in memory, and the aggregator
 * holds about a million counters, so a `1d` window with `1ms` buckets must be refused, not allocated.
 */
export const MAX_BUCKETS_PER_WINDOW = 10_000;

/**
 * `lengthMs / 60` when that is a whole number of ms; otherwise the largest divisor of `lengthMs`
 * that is at most `lengthMs / 60` (so the window still holds a whole number of buckets and the
 * resolution is never coarser than asked: `90ms` → 1ms, `500ms` → 5ms); at least 1ms, so windows
 * shorter than 60ms get 1ms buckets (fewer than 60 of them).
 */
export function defaultBucketMs(lengthMs: number): number {
  const ideal = lengthMs / DEFAULT_BUCKETS_PER_WINDOW;
  if (Number.isInteger(ideal)) return ideal;
  let best = 1;
  // Divisors come in pairs (d, lengthMs / d) with d <= sqrt: O(sqrt(lengthMs)), not O(lengthMs).
  for (let d = 1; d * d <= lengthMs; d++) {
    if (lengthMs % d !== 0) continue;
    const pair = lengthMs / d;
    if (d <= ideal && d > best) best = d;
    if (pair <= ideal && pair > best) best = pair;
  }
  return best;
}

function toMs(value: number | string, what: string): number {
  if (typeof value === 'string') return parseDuration(value);
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new QuotaflowError('CONFIG_INVALID', `${what} must be a positive whole number of ms, got ${String(value)}`, {
      details: { [what]: value },
    });
  }
  return value;
}

/** Builds and validates a WindowSpec; throws CONFIG_INVALID with a hint when it cannot be used. */
export function windowSpec(length: number | string, options: WindowOptions = {}): WindowSpec {
  const lengthMs = toMs(length, 'lengthMs');
  const bucketMs = options.bucketMs === undefined ? defaultBucketMs(lengthMs) : toMs(options.bucketMs, 'bucketMs');
  const kind = options.kind ?? 'rolling';
  if (kind !== 'rolling' && kind !== 'fixed') {
    throw new QuotaflowError('CONFIG_INVALID', `unknown window kind ${JSON.stringify(kind)}`, {
      hint: "use 'rolling' or 'fixed'",
      details: { kind },
    });
  }
  if (lengthMs % bucketMs !== 0) {
    throw new QuotaflowError('CONFIG_INVALID', `window ${formatDuration(lengthMs)} is not a whole number of ${formatDuration(bucketMs)} buckets`, {
      hint: 'choose a bucket size that divides the window exactly',
      details: { lengthMs, bucketMs },
    });
  }
  const buckets = lengthMs / bucketMs;
  if (buckets > MAX_BUCKETS_PER_WINDOW) {
    throw new QuotaflowError(
      'CONFIG_INVALID',
      `window ${formatDuration(lengthMs)} with ${formatDuration(bucketMs)} buckets needs ${buckets} buckets (at most ${MAX_BUCKETS_PER_WINDOW})`,
      {
        hint:
          options.bucketMs === undefined
            ? `no bucket size divides ${lengthMs}ms finely enough; use a rounder window or set the bucket size`
            : 'use larger buckets',
        details: { lengthMs, bucketMs },
      },
    );
  }
  return Object.freeze({ lengthMs, bucketMs, kind });
}

/** How many buckets the window spans (`n`). */
export function bucketsIn(window: WindowSpec): number {
  return window.lengthMs / window.bucketMs;
}

/** The bucket an event at `t` lands in. */
export function bucketOf(t: number, bucketMs: number): number {
  return Math.floor(t / bucketMs);
}

/** `'1m rolling (1s buckets)'`, for logs and `policy explain`. */
export function describeWindow(window: WindowSpec): string {
  return `${formatDuration(window.lengthMs)} ${window.kind} (${formatDuration(window.bucketMs)} buckets)`;
}

const NAMED_LENGTHS = new Map([
  [1_000, 'second'],
  [60_000, 'minute'],
  [3_600_000, 'hour'],
  [86_400_000, 'day'],
]);

/** A window's name in rate-limit headers (IETF RateLimit-Policy): second, minute, hour, day, else its length ("90s"). */
export function windowName(lengthMs: number): string {
  return NAMED_LENGTHS.get(lengthMs) ?? formatDuration(lengthMs);
}
