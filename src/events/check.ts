/**
 * The hot path's check of a usage event: true exactly when `UsageEventSchema.safeParse(raw)` would
 * succeed, written out by hand so that a valid event costs a few comparisons and allocates nothing
 * (zod builds a copy of every event and a context per field). zod stays the source of truth: when
 * this says no, the decoder asks zod for the reasons, and test/unit/event-check.test.ts runs both on
 * a corpus of valid and invalid events and fails on any disagreement.
 *
 * The value comes from JSON.parse, so there are no undefined fields, functions or symbols to think
 * about; reserved keys (__proto__ ...) are rejected before this is called (see decode.ts).
 */
import { RESERVED_KEYS } from './reserved.ts';
import { MAX_EVENT_COST, USAGE_EVENT_SCHEMA_VERSION, type UsageEvent } from './usage.ts';

type Fields = Record<string, unknown>;

const isObject = (v: unknown): v is Fields => typeof v === 'object' && v !== null && !Array.isArray(v);
const isText = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
/** zod's `.int()`: a safe integer. */
const isInt = (v: unknown): v is number => Number.isSafeInteger(v);
const isEpochMs = (v: unknown): boolean => isInt(v) && v >= 0;

function isDecisionRef(v: unknown): boolean {
  if (!isObject(v)) return false;
  let n = 0;
  for (const key in v) {
    n++;
    if (key !== 'counterKey' && key !== 'windowMs' && key !== 'decidedAt') return false;
  }
  return n === 3 && isText(v.counterKey) && isInt(v.windowMs) && v.windowMs > 0 && isEpochMs(v.decidedAt);
}

function isOutcome(v: unknown): boolean {
  if (!isObject(v)) return false;
  const kind = v.kind;
  let n = 0;
  for (const key in v) {
    n++;
    if (key !== 'kind' && (key !== 'decision' || kind === 'admitted')) return false;
  }
  if (kind === 'admitted') return n === 1;
  return (kind === 'refused' || kind === 'shadow_refused') && n === 2 && isDecisionRef(v.decision);
}

function isSubjects(v: unknown): boolean {
  if (!isObject(v)) return false;
  for (const key in v) if (typeof v[key] !== 'string' || RESERVED_KEYS.has(key)) return false;
  return true;
}

/** The keys a usage event may have; each is checked below. */
const FIELDS: ReadonlySet<string> = new Set([
  'schemaVersion',
  'eventTime',
  'region',
  'gatewayId',
  'subjects',
  'api',
  'method',
  'path',
  'cost',
  'outcome',
  'requestId',
  'policyVersion',
]);

export function isValidUsageEvent(raw: unknown): raw is UsageEvent {
  if (!isObject(raw)) return false;
  for (const key in raw) if (!FIELDS.has(key)) return false;
  const { method, path, requestId, policyVersion, api, cost } = raw;
  return (
    raw.schemaVersion === USAGE_EVENT_SCHEMA_VERSION &&
    isEpochMs(raw.eventTime) &&
    isText(raw.region) &&
    isText(raw.gatewayId) &&
    isSubjects(raw.subjects) &&
    (api === null || isText(api)) &&
    (method === undefined || isText(method)) &&
    (path === undefined || typeof path === 'string') &&
    isInt(cost) &&
    cost >= 1 &&
    cost <= MAX_EVENT_COST &&
    isOutcome(raw.outcome) &&
    (requestId === undefined || typeof requestId === 'string') &&
    (policyVersion === undefined || isText(policyVersion))
  );
}
