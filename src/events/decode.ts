/**
 * Turning a quota.usage record's bytes into a UsageEvent, or into the reason it goes to the DLQ
 * (DESIGN §2, §3). Pure: the clock and the limits are passed in. Late events are not decided here:
 * lateness depends on the aggregator's watermark and they are dropped and counted, never dead-lettered.
 */
import { isUtf8 } from 'node:buffer';
import { z } from 'zod';
import { MAX_EVENT_COST, USAGE_EVENT_SCHEMA_VERSION, UsageEventSchema, type UsageEvent } from './usage.ts';
import { BATCH_SHARED_FIELDS, MAX_BATCH_EVENTS, USAGE_BATCH_KIND, USAGE_BATCH_SCHEMA_VERSION, UsageBatchSchema } from './batch.ts';
import { isValidUsageEvent } from './check.ts';
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

function fail(reason: DlqReason, detail: string): { ok: false; reason: DlqReason; detail: string } {
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
  const parsed = parseRecord(value);
  if (!parsed.ok) return parsed;
  if (isBatch(parsed.raw)) return fail('schema', 'a usage batch, where one usage event was expected (read it with decodeUsageRecord)');
  return checkEvent(parsed.raw, opts);
}

/** An event of a batch that goes to the DLQ alone: the single usage event it stands for, and why. */
export interface RejectedEvent {
  /** Its index in the batch's `events`. */
  index: number;
  reason: DlqReason;
  detail: string;
  /** The event with the batch's shared fields, as a usage event record (what a DLQ record holds); an item that is not an object, as sent. */
  value: Buffer;
}

export type RecordDecodeResult =
  | {
      ok: true;
      events: UsageEvent[];
      /** For a batch, each event's index in the batch's `events` (null for a single usage event). */
      positions: number[] | null;
      rejected: RejectedEvent[];
    }
  | { ok: false; reason: DlqReason; detail: string };

/**
 * A quota.usage record: one usage event, or a usage batch (batch.ts). A record that fails as a whole
 * (not JSON, not a batch's layout) gives its reason; a batch's events are judged one by one, and the
 * bad ones come back in `rejected` while the good ones are counted.
 */
export function decodeUsageRecord(value: Buffer | null, opts: DecodeOptions): RecordDecodeResult {
  const parsed = parseRecord(value);
  if (!parsed.ok) return parsed;
  const raw = parsed.raw;
  if (!isBatch(raw)) {
    const one = checkEvent(raw, opts);
    return one.ok ? { ok: true, events: [one.event], positions: null, rejected: [] } : one;
  }
  const header = checkBatchHeader(raw);
  if (header !== undefined) return header;
  const items = raw.events as unknown[];
  const events: UsageEvent[] = [];
  const positions: number[] = [];
  const rejected: RejectedEvent[] = [];
  for (let index = 0; index < items.length; index++) {
    const fields = fieldsOf(items[index]);
    const shared = fields && BATCH_SHARED_FIELDS.find((f) => Object.hasOwn(fields, f));
    let event: unknown;
    let one: DecodeResult;
    if (!fields) {
      event = items[index]; // not an event at all: the DLQ keeps what was sent
      one = fail('schema', `events[${index}]: expected an object`);
    } else if (shared) {
      // What the event says wins in the DLQ copy: that is what was wrong with it.
      event = { ...withShared(raw, {}), ...fields };
      one = fail('schema', `events[${index}].${shared}: set on the batch, not on its events`);
    } else {
      event = withShared(raw, fields);
      one = checkEvent(event, opts);
    }
    if (one.ok) {
      events.push(one.event);
      positions.push(index);
    } else rejected.push({ index, reason: one.reason, detail: one.detail, value: Buffer.from(JSON.stringify(event), 'utf8') });
  }
  return { ok: true, events, positions, rejected };
}

type Parsed = { ok: true; raw: unknown } | { ok: false; reason: DlqReason; detail: string };

function parseRecord(value: Buffer | null): Parsed {
  if (value === null || value.length === 0) return fail('empty', value === null ? 'null value (tombstone)' : 'zero-length value');

  // Buffer#toString would turn bad bytes into U+FFFD and the event would count under a mangled
  // subject; isUtf8 (simdutf) rejects them and is cheaper than a fatal TextDecoder. A BOM is kept,
  // so it fails JSON.parse: gateways must not send one (RFC 8259 §8.1).
  if (!isUtf8(value)) return fail('undecodable', `not valid UTF-8 (${value.length} bytes)`);
  try {
    return { ok: true, raw: JSON.parse(value.toString('utf8')) };
  } catch (e) {
    return fail('undecodable', `not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
}

const fieldsOf = (raw: unknown): Record<string, unknown> | undefined =>
  typeof raw === 'object' && raw !== null && !Array.isArray(raw) ? (raw as Record<string, unknown>) : undefined;

function isBatch(raw: unknown): raw is Record<string, unknown> {
  return fieldsOf(raw)?.kind === USAGE_BATCH_KIND;
}

/** A batch's own fields (not its events'), checked by zod: once per record, so no fast path is needed. */
function checkBatchHeader(raw: Record<string, unknown>): { ok: false; reason: DlqReason; detail: string } | undefined {
  const version = raw.schemaVersion;
  if (typeof version === 'number' && version !== USAGE_BATCH_SCHEMA_VERSION) {
    return fail('unsupported-version', `usage batch schemaVersion ${version}; this aggregator reads ${USAGE_BATCH_SCHEMA_VERSION}`);
  }
  const { events, ...shared } = raw;
  const reserved = findReservedKey(shared);
  if (reserved) return fail('schema', `${formatPath(reserved)}: reserved key (__proto__, constructor and prototype are never data)`);
  const header = BatchHeaderSchema.safeParse({ ...shared, events: Array.isArray(events) ? [] : events });
  const issues = header.success ? [] : header.error.issues.filter((i) => !(i.path[0] === 'events' && i.code === 'too_small'));
  if (issues.length) return fail('schema', describeIssues(issues));
  const n = (events as unknown[]).length;
  if (n === 0 || n > MAX_BATCH_EVENTS) return fail('schema', `events: ${n} events; a batch holds 1 to ${MAX_BATCH_EVENTS}`);
  return undefined;
}

/** The batch's fields without its events' schema: the events are judged one by one. */
const BatchHeaderSchema = UsageBatchSchema.extend({ events: z.array(z.unknown()) });

/**
 * A batch's event as the usage event it stands for: the parsed item itself (fresh from JSON.parse,
 * so it may be changed) with the batch's shared fields added. An item that names a shared field is
 * rejected before this, so nothing of the item's is overwritten; a "__proto__" key stays a plain
 * key (assignment of other names never touches the prototype) and is rejected by checkEvent.
 */
function withShared(batch: Record<string, unknown>, event: Record<string, unknown>): Record<string, unknown> {
  event.schemaVersion = USAGE_EVENT_SCHEMA_VERSION;
  event.region = batch.region;
  event.gatewayId = batch.gatewayId;
  if (batch.policyVersion !== undefined) event.policyVersion = batch.policyVersion;
  return event;
}

/** One usage event, parsed from JSON: valid (fast path, then zod for the reasons), or why not. */
function checkEvent(raw: unknown, opts: DecodeOptions): DecodeResult {
  const fields = fieldsOf(raw);
  // The common case: a valid event, judged without zod (check.ts; equal to the schema by test).
  if (isValidUsageEvent(raw)) {
    if (raw.eventTime > opts.now + opts.futureSkewMs) return futureFail(raw.eventTime, opts);
    return { ok: true, event: raw };
  }

  // Checked before the schema: a newer layout usually breaks other fields too, and "upgrade the
  // aggregator" is a different fix from "the gateway sends bad events".
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
  if (future) return futureFail(eventTime as number, opts);
  // Reached only when the schema passed: a failure explained by cost or eventTime returned above.
  return { ok: true, event: parsed.data! };
}

function futureFail(eventTime: number, opts: DecodeOptions): DecodeResult {
  const ahead = eventTime - opts.now;
  return fail('future', `eventTime ${eventTime} is ${ahead} ms ahead of now (${opts.now}); the tolerance is ${opts.futureSkewMs} ms`);
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
