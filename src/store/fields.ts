/**
 * Fields of a counter hash. Bucket fields `b<bucketMs>:<bucketIndex>` hold integer counts; fields
 * starting with `_` are meta (the last published decision, an open breach record...) that the
 * aggregator sets and deletes as opaque strings. The two never collide, and prune in
 * lua/includes/pruneBuckets.lua reads this same layout.
 */

export interface BucketCount {
  readonly bucketMs: number;
  readonly bucketIndex: number;
  readonly count: number;
}

export const META_PREFIX = '_';

export function bucketField(bucketMs: number, bucketIndex: number): string {
  return `b${bucketMs}:${bucketIndex}`;
}

const BUCKET_FIELD = /^b([1-9][0-9]*):(-?[0-9]+)$/;

/** The bucket a field names, or undefined for meta and unknown fields. */
export function parseBucketField(field: string): { bucketMs: number; bucketIndex: number } | undefined {
  if (field.charCodeAt(0) !== 98 /* b */) return undefined;
  const m = BUCKET_FIELD.exec(field);
  if (!m) return undefined;
  return { bucketMs: Number(m[1]), bucketIndex: Number(m[2]) };
}

export function isMetaField(field: string): boolean {
  return field.length > 1 && field.startsWith(META_PREFIX);
}
