/**
 * A rollup: one region's own total for one counter and one bucket (topic quota.rollup, compacted,
 * mirrored to the other regions by MirrorMaker 2 as `<region>.quota.rollup`; DESIGN §5).
 *
 * The total is absolute, never a delta: everything the region counted in that bucket so far. A
 * region's total of a bucket only grows, so the newest value is the largest, and a reader keeps the
 * largest it has seen per region, counter and bucket. That makes MirrorMaker 2's re-deliveries and
 * re-orderings harmless: a duplicate or an older copy never counts twice and never takes a total back.
 */
import { z } from 'zod';
import { EpochMsSchema } from './usage.ts';

export const ROLLUP_SCHEMA_VERSION = 1;

export const RollupSchema = z
  .strictObject({
    schemaVersion: z.literal(ROLLUP_SCHEMA_VERSION).describe('Version of this rollup layout.'),
    region: z.string().min(1).describe('The region whose own traffic the total counts (not a region it was mirrored through).'),
    counterKey: z.string().min(1).describe('The counter (see src/policy/keys.ts).'),
    tenant: z.string().min(1).describe('Tenant key (`subject=value`), the hash tag inside the counter key.'),
    bucketMs: z.number().int().positive().describe("Bucket length in ms: one of the bucket sizes of the counter's windows."),
    bucketIndex: z.number().int().describe('The bucket: floor(event time / bucketMs).'),
    total: z
      .number()
      .int()
      .nonnegative()
      .describe("Everything the region counted in this bucket so far (absolute; the largest value seen is the region's total)."),
    publishedAt: EpochMsSchema.describe('When the aggregator published this total (epoch ms).'),
  })
  .describe("One region's own total of one counter's bucket.");

export type Rollup = z.infer<typeof RollupSchema>;

/**
 * The record key: what compaction keeps one record of. The numbers go first, so whatever a counter
 * key holds, `bucketMs:bucketIndex:` parses back.
 */
export function rollupKey(r: Pick<Rollup, 'counterKey' | 'bucketMs' | 'bucketIndex'>): string {
  return `${r.bucketMs}:${r.bucketIndex}:${r.counterKey}`;
}

export function encodeRollup(r: Rollup): string {
  return JSON.stringify(r);
}

export type DecodedRollup = { ok: true; rollup: Rollup } | { ok: false; detail: string };

/** A rollup record's value, validated; what is not one says why (its path and problem). */
export function decodeRollup(value: Buffer | string | null): DecodedRollup {
  if (value === null) return { ok: false, detail: 'a tombstone: no rollup' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof value === 'string' ? value : value.toString('utf8'));
  } catch (e) {
    return { ok: false, detail: `not JSON: ${(e as Error).message}` };
  }
  const r = RollupSchema.safeParse(parsed);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    return { ok: false, detail: `${issue.path.join('.') || '(record)'}: ${issue.message}` };
  }
  return { ok: true, rollup: r.data };
}

/** Whether `incoming` is news to a reader holding `held` for the same region, counter and bucket. */
export function isNewerTotal(held: number | undefined, incoming: number): boolean {
  return held === undefined || incoming > held;
}
