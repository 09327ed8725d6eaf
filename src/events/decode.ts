/**
 * Turning a quota.usage record's bytes into a UsageEvent, or into the reason it goes to the DLQ
 * (DESIGN §2, §3). Pure: the clock and the limits are passed in. Late events are not decided here:
 * lateness depends on the aggregator's watermark and they are dropped and counted, never dead-lettered.
 */
import { isUtf8 } from 'node:buffer';
import { MAX_EVENT_COST, USAGE_EVENT_SCHEMA_VERSION, UsageEventSchema, type UsageEvent } from './usage.ts';
import { findReservedKey } from './reserved.ts';

/**
 * Why a record went to quota.usage.dlq. Stable: these strings are the `quotaflow-dlq-reason` header
 * and a metric attribute, so rename one only as a contract change.
 */
export const DLQ_REASONS = [
  /** A null (tombstone) or zero-length value. */
  'empty',
  /** Not valid UTF-8, or not JSON. */
  'undecodable',
  /** A numeric schemaVersion this aggregator does not read. */
  'unsupported-version',
  /** JSON that is not a valid UsageEvent (wrong or missing field, unknown field). */
  'schema',
  /** An event whose cost is above MAX_EVENT_COST (the schema's maximum). */
  'absurd-cost',
  /** eventTime beyond now + the future skew tolerance. */
  'future',
  /** Decoded, but the policy cannot place it (unknown API, missing subject); set by the aggregator. */
  'unresolved',
] as const;

export type DlqReason = (typeof DLQ_REASONS)[number];

const REASONS: ReadonlySet<string> = new Set(DLQ_REASONS);

export function isDlqReason(value: unknown): value is DlqReason {
  return typeof value === 'string' && REASONS.has(value);
}

export interface DecodeOptions {
  /** The aggregator's clock, epoch ms. */
  now: number;
  /** How far ahead of `now` an eventTime may be, ms; `now + futureSkewMs` itself is accepted. */
  futureSkewMs: number;
}

export type DecodeResult = { ok: true; event: UsageEvent } | { ok: false; reason: DlqReason; detail: string };

/** Details end up in a Kafka header and in logs; an attacker-sized field name must not make them huge. */
export const MAX_DECODE_DETAIL_CHARS = 500;
const MAX_ISSUES_LISTED = 5;
const MAX_SEGMENT_CHARS = 64;

function fail(reason: DlqReason, detail: string): DecodeResult {
  return { ok: false, reason, detail: clip(detail, MAX_DECODE_DETAIL_CHARS) };
}

/** Cuts to at most `max` UTF-16 units without splitting a surrogate pair, marking the cut with '…'. */
export function clip(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max - 1;
  const code = text.charCodeAt(end - 1);
  if (code >= 0xd800 && code <= 0xdbff) end--;
  return text.slice(0, end) + '…';
}

export function decodeUsageEvent(value: Buffer | null, opts: DecodeOptions): DecodeResult {
  if (value === null || value.length === 0) return fail('empty', value === null ? 'null value (tombstone)' : 'zero-length value');

  // Buffer#toString would turn bad bytes into U+FFFD and the event would count under a mangled
  // subject; isUtf8 (simdutf) rejects them and is cheaper than a fatal TextDecoder. A BOM is kept,
  // so it fails JSON.parse: gateways must not send one (RFC 8259 §8.1).
  if (!isUtf8(value)) return fail('undecodable', `not valid UTF-8 (${value.length} bytes)`);
  let raw: unknown;
  try {
    raw = JSON.parse(value.toString('utf8'));
  } catch (e) {
    return fail('undecodable', `not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }

  // Checked before the schema: a newer layout usually breaks other fields too, and "upgrade the
  // aggregator" is a different fix from "the gateway sends bad events".
  const fields = typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? (raw as Record<string, unknown>) : undefined;
  const version = fields?.schemaVersion;
  if (typeof version === 'number' && version !== USAGE_EVENT_SCHEMA_VERSION) {
    return fail('unsupported-version', `schemaVersion ${version}; this aggregator reads ${USAGE_EVENT_SCHEMA_VERSION}`);
  }

  // zod's records skip a "__proto__" key without a word (JSON.parse makes it an own property), so
  // the schema never sees it: such a record would count as if the key were not there.
  const reserved = findReservedKey(raw);
  if (reserved) return fail('schema', `${formatPath(reserved)}: reserved key (__proto__, constructor and prototype are never data)`);

  const cost = fields?.cost;
  const eventTime = fields?.eventTime;
  const absurdCost = typeof cost === 'number' && cost > MAX_EVENT_COST;
  const future = typeof eventTime === 'number' && eventTime > opts.now + opts.futureSkewMs;

  const parsed = UsageEventSchema.safeParse(raw);
  if (!parsed.success) {
    // A cost above the maximum or an eventTime of 2^60 breaks the schema, but what is wrong with
    // them is the value, so they keep the reason that says so.
    const onlyOutOfRange = parsed.error.issues.every(
      (i) => i.path.length === 1 && ((i.path[0] === 'cost' && absurdCost) || (i.path[0] === 'eventTime' && future)),
    );
    if (!onlyOutOfRange) return fail('schema', describeIssues(parsed.error.issues));
  }
  if (absurdCost) return fail('absurd-cost', `cost ${cost} is above the maximum of ${MAX_EVENT_COST}`);
  if (future) {
    const ahead = (eventTime as number) - opts.now;
    return fail('future', `eventTime ${eventTime} is ${ahead} ms ahead of now (${opts.now}); the tolerance is ${opts.futureSkewMs} ms`);
  }
  // Reached only when the schema passed: a failure explained by cost or eventTime returned above.
  return { ok: true, event: parsed.data! };
}

interface Issue {
  code: string;
  path: PropertyKey[];
  message: string;
  keys?: string[];
}

/** `cost: Too small: expected number to be >=1; foo: Unrecognized key`, at most a few issues. */
function describeIssues(issues: readonly Issue[]): string {
  const lines: string[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys' && issue.keys) {
      for (const key of issue.keys) lines.push(`${formatPath([...issue.path, key])}: Unrecognized key`);
    } else {
      lines.push(`${formatPath(issue.path)}: ${issue.message}`);
    }
  }
  const shown = lines.slice(0, MAX_ISSUES_LISTED).join('; ');
  return lines.length > MAX_ISSUES_LISTED ? `${shown}; (+${lines.length - MAX_ISSUES_LISTED} more)` : shown;
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** `outcome.decision.counterKey`, `subjects["x-team"]`; `(event)` for the value itself. */
export function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return '(event)';
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else {
      const name = clip(String(segment), MAX_SEGMENT_CHARS);
      out += IDENTIFIER.test(name) ? (out ? `.${name}` : name) : `[${JSON.stringify(name)}]`;
    }
  }
  return out;
}
