/**
 * A deterministic corpus of quota.usage payloads, good and bad, for tests that feed the aggregator
 * what real gateways (and broken ones) send. The same seed always gives the same bytes, so a failing
 * integration run can be reproduced exactly. Each record says what decodeUsageEvent must make of it.
 *
 * Good records are TalkPilot events (policies/talkpilot.yaml: tenant and scope `api_key`, one
 * default rule, so `api` is null): admitted, cost 1 (sometimes a few coalesced), eventTime within
 * the last minute of `now`. Every record is keyed the way a gateway keys it, by the tenant key
 * (`api_key=<tenant>`), so a tenant's good and bad records share a partition.
 */
import { MAX_EVENT_COST, type UsageEvent } from '../../src/events/usage.ts';
import type { DecodeOptions, DlqReason } from '../../src/events/decode.ts';
import { tenantKey } from '../../src/policy/index.ts';

/**
 * The limits the corpus assumes the decoder runs with (the aggregator's defaults); pass the same to
 * decodeUsageEvent. Only `absurd-cost`'s smallest variant (MAX_EVENT_COST + 1) sits on a boundary:
 * future events are at least 10 minutes past the tolerance, so a consumer whose clock is a little
 * ahead of `now` still sees them as future.
 */
export interface CorpusLimits {
  futureSkewMs: number;
}

export const CORPUS_LIMITS: CorpusLimits = { futureSkewMs: 60_000 };

export function corpusDecodeOptions(now: number, limits: CorpusLimits = CORPUS_LIMITS): DecodeOptions {
  return { now, ...limits };
}

export const MALFORMED_KINDS = [
  'null-value',
  'empty-value',
  'random-bytes',
  'invalid-utf8',
  'not-json',
  'truncated-json',
  'not-an-object',
  'wrong-version',
  'missing-field',
  'wrong-type',
  'bad-cost',
  'absurd-cost',
  'future',
  'unknown-field',
  'subject-not-string',
  'empty-string',
  'bad-decision-ref',
  'huge-string',
  'reserved-key',
] as const;

export type MalformedKind = (typeof MALFORMED_KINDS)[number];

export interface CorpusRecord {
  /** The Kafka key, as a gateway writes it: the tenant key, `api_key=<tenant>`. */
  key: string;
  value: Buffer | null;
  expect: 'good' | DlqReason;
  kind: 'good' | MalformedKind;
}

export interface CorpusOptions {
  seed: number;
  good: number;
  bad: number;
  /** TalkPilot API keys: good events carry one as subjects.api_key; every record is keyed by one. */
  tenants: string[];
  now: number;
  limits?: CorpusLimits;
  /** Length of the strings in `huge-string` records (default 32 KiB: big, but under Kafka's 1 MB). */
  hugeChars?: number;
}

/** mulberry32: small, fast, and the same sequence on every platform for a given seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

type Rng = () => number;
const int = (rng: Rng, lo: number, hi: number) => lo + Math.floor(rng() * (hi - lo + 1));
const pick = <T>(rng: Rng, items: readonly T[]): T => items[Math.floor(rng() * items.length)]!;
const hex = (rng: Rng, n: number) => Array.from({ length: n }, () => int(rng, 0, 15).toString(16)).join('');

const REGIONS = ['eu-west-1', 'us-east-1', 'ap-south-1'];
const ROUTES: Array<[string, string]> = [
  ['GET', '/agents'],
  ['POST', '/calls'],
  ['GET', '/calls/c_42'],
  ['DELETE', '/agents/a_7'],
];

export function goodEvent(rng: Rng, tenant: string, now: number): UsageEvent {
  const [method, path] = pick(rng, ROUTES);
  const event: UsageEvent = {
    schemaVersion: 1,
    eventTime: now - int(rng, 0, 59_999),
    region: pick(rng, REGIONS),
    gatewayId: `gw-${int(rng, 1, 4)}`,
    subjects: { api_key: tenant },
    api: null,
    method,
    path,
    cost: rng() < 0.9 ? 1 : int(rng, 2, 5),
    outcome: { kind: 'admitted' },
    policyVersion: '1',
  };
  if (rng() < 0.8) event.requestId = `req_${hex(rng, 12)}`;
  return event;
}

const keyOf = (tenant: string) => tenantKey({ subject: 'api_key', value: tenant });

type Json = Record<string, unknown>;
const utf8 = (text: string) => Buffer.from(text, 'utf8');
const json = (value: unknown) => utf8(JSON.stringify(value));
const clone = (event: UsageEvent): Json => structuredClone(event) as Json;

/** Serializes `obj` with `raw` as the literal JSON text of `field` (for numbers JSON.stringify cannot write). */
function withRawField(obj: Json, field: string, raw: string): Buffer {
  const marker = '@@raw@@';
  return utf8(JSON.stringify({ ...obj, [field]: marker }).replace(JSON.stringify(marker), raw));
}

/** Sequences no UTF-8 decoder may accept: overlong, lone continuation, surrogate, truncated, out of range. */
const INVALID_UTF8: readonly number[][] = [
  [0xc0, 0xaf],
  [0x80],
  [0xed, 0xa0, 0x80],
  [0xe2, 0x82],
  [0xf5, 0x80, 0x80, 0x80],
  [0xfe],
  [0xff],
  [0xf0, 0x9f, 0x98],
];

interface Bad {
  value: Buffer | null;
  expect: DlqReason;
}

function bad(kind: MalformedKind, rng: Rng, base: UsageEvent, now: number, limits: CorpusLimits, huge: number): Bad {
  const e = clone(base);
  switch (kind) {
    case 'null-value':
      return { value: null, expect: 'empty' };
    case 'empty-value':
      return { value: Buffer.alloc(0), expect: 'empty' };
    case 'random-bytes': {
      // The first byte is a control character, which neither starts JSON nor may appear outside a
      // string, so the bytes are undecodable whether or not the rest happens to be valid UTF-8.
      const bytes = Buffer.from(Array.from({ length: int(rng, 1, 256) }, () => int(rng, 0, 255)));
      bytes[0] = int(rng, 0x00, 0x08);
      return { value: bytes, expect: 'undecodable' };
    }
    case 'invalid-utf8': {
      // A well-formed event with bad bytes inside a subject: a lenient decoder would count it under
      // a key containing U+FFFD instead of refusing it.
      const text = JSON.stringify(e);
      const at = text.indexOf(base.subjects.api_key!) + 1;
      const seq = Buffer.from(pick(rng, INVALID_UTF8));
      return { value: Buffer.concat([utf8(text.slice(0, at)), seq, utf8(text.slice(at))]), expect: 'undecodable' };
    }
    case 'not-json': {
      const text = JSON.stringify(e);
      const variants = [
        `\uFEFF${text}`, // a byte-order mark is not JSON (RFC 8259 §8.1)
        `${text}x`,
        text.replaceAll('"', "'"),
        `// usage\n${text}`,
        `schemaVersion=1&cost=${int(rng, 1, 9)}`,
        `{"schemaVersion":1,"cost":NaN}`,
        'undefined',
        `${text}${text}`,
      ];
      return { value: utf8(pick(rng, variants)), expect: 'undecodable' };
    }
    case 'truncated-json': {
      const bytes = json(e);
      return { value: bytes.subarray(0, int(rng, 1, bytes.length - 1)), expect: 'undecodable' };
    }
    case 'not-an-object': {
      const variants: unknown[] = [[e], [], int(rng, 0, 1e6), 'admitted', JSON.stringify(e), true, null];
      return { value: json(pick(rng, variants)), expect: 'schema' };
    }
    case 'wrong-version':
      e.schemaVersion = pick(rng, [0, 2, 3, 99, -1, 1.5]);
      return { value: json(e), expect: 'unsupported-version' };
    case 'missing-field': {
      const field = pick(rng, ['schemaVersion', 'eventTime', 'region', 'gatewayId', 'subjects', 'api', 'cost', 'outcome', 'outcome.kind']);
      if (field === 'outcome.kind') delete (e.outcome as Json).kind;
      else delete e[field];
      return { value: json(e), expect: 'schema' };
    }
    case 'wrong-type': {
      const variants: Array<[string, unknown]> = [
        ['schemaVersion', '1'],
        ['eventTime', new Date(base.eventTime).toISOString()],
        ['eventTime', String(base.eventTime)],
        ['cost', '1'],
        ['cost', true],
        ['region', int(rng, 1, 9)],
        ['gatewayId', null],
        ['api', int(rng, 1, 9)],
        ['subjects', [base.subjects.api_key]],
        ['subjects', base.subjects.api_key],
        ['outcome', 'admitted'],
        ['outcome', { kind: 'blocked' }],
        ['method', 3],
        ['requestId', { id: 'r' }],
        ['policyVersion', 1],
      ];
      const [field, value] = pick(rng, variants);
      e[field] = value;
      return { value: json(e), expect: 'schema' };
    }
    case 'bad-cost':
      e.cost = pick(rng, [0, -1, -int(rng, 2, 1e6), 1.5, 0.001, 2.25]);
      return { value: json(e), expect: 'schema' };
    case 'absurd-cost': {
      const variants = [String(MAX_EVENT_COST + 1), String(MAX_EVENT_COST * 1_000), String(Number.MAX_SAFE_INTEGER), '1e300', '1e400'];
      return { value: withRawField(e, 'cost', pick(rng, variants)), expect: 'absurd-cost' };
    }
    case 'future': {
      const horizon = now + limits.futureSkewMs;
      const variants = [horizon + 600_000, horizon + int(rng, 600_001, 3_600_000), now + 86_400_000, now + 100 * 365 * 86_400_000, 2 ** 60];
      return { value: withRawField(e, 'eventTime', String(pick(rng, variants))), expect: 'future' };
    }
    case 'unknown-field': {
      const where = int(rng, 0, 2);
      if (where === 0) e[pick(rng, ['tenant', 'counterKey', 'Cost', 'event_time', 'apiKey'])] = 'x';
      else if (where === 1) e.outcome = { kind: 'admitted', reason: 'ok' };
      else
        e.outcome = { kind: 'refused', decision: { counterKey: `{${base.subjects.api_key}}:per-key`, windowMs: 60_000, decidedAt: now - 1_000, until: now } };
      return { value: json(e), expect: 'schema' };
    }
    case 'subject-not-string':
      e.subjects = { api_key: pick(rng, [int(rng, 1, 1e9), null, true, { id: base.subjects.api_key }, [base.subjects.api_key]]) };
      return { value: json(e), expect: 'schema' };
    case 'empty-string':
      e[pick(rng, ['region', 'gatewayId', 'api', 'method', 'policyVersion'])] = '';
      return { value: json(e), expect: 'schema' };
    case 'bad-decision-ref': {
      const decision: Json = { counterKey: `{${base.subjects.api_key}}:per-key`, windowMs: 60_000, decidedAt: now - 1_000 };
      const broken = pick(rng, [
        ['counterKey', ''],
        ['windowMs', 0],
        ['windowMs', -60_000],
        ['decidedAt', -1],
        ['decidedAt', 1.5],
      ] as Array<[string, unknown]>);
      decision[broken[0]] = broken[1];
      e.outcome = { kind: pick(rng, ['refused', 'shadow_refused']), ...(rng() < 0.2 ? {} : { decision }) };
      return { value: json(e), expect: 'schema' };
    }
    case 'huge-string': {
      // The schema sets no length limit, so a huge string where a string belongs is a valid event;
      // these put one where it breaks the schema, and check the detail stays short.
      const big = 'x'.repeat(huge);
      const where = int(rng, 0, 3);
      if (where === 0) e.cost = '9'.repeat(huge);
      else if (where === 1) e[big] = 1;
      else if (where === 2) e.subjects = { api_key: [big] };
      else e.outcome = { kind: big };
      return { value: json(e), expect: 'schema' };
    }
    case 'reserved-key': {
      // JSON.parse makes "__proto__" an own key, and zod's records skip it: each of these must still
      // reach the DLQ (issue #12). Written as raw text, since an object literal would set a prototype.
      const key = JSON.stringify(base.subjects.api_key);
      const variants = [
        `"subjects":{"__proto__":{"api_key":"x"},"api_key":${key}}`,
        `"subjects":{"__proto__":7,"api_key":${key}}`,
        `"subjects":{"api_key":${key},"constructor":"c"}`,
        `"subjects":{"api_key":${key},"prototype":"p"}`,
        `"subjects":{"api_key":${key}},"__proto__":{"cost":2}`,
        `"subjects":{"\\u005f_proto__":{"api_key":"x"},"api_key":${key}}`,
      ];
      const { subjects: _subjects, ...rest } = e;
      const text = JSON.stringify(rest);
      return { value: utf8(`${text.slice(0, -1)},${pick(rng, variants)}}`), expect: 'schema' };
    }
  }
}

/**
 * `good` valid events and `bad` malformed ones, shuffled together. Bad kinds go round-robin through
 * MALFORMED_KINDS (variants chosen by the seed), so any `bad >= MALFORMED_KINDS.length` has every kind.
 */
export function corpus(options: CorpusOptions): CorpusRecord[] {
  const { seed, good, bad: badCount, tenants, now } = options;
  if (tenants.length === 0) throw new Error('corpus needs at least one tenant');
  const limits = options.limits ?? CORPUS_LIMITS;
  const huge = options.hugeChars ?? 32_768;
  const rng = prng(seed);
  const records: CorpusRecord[] = [];
  for (let i = 0; i < good; i++) {
    const tenant = pick(rng, tenants);
    records.push({ key: keyOf(tenant), value: json(goodEvent(rng, tenant, now)), expect: 'good', kind: 'good' });
  }
  for (let i = 0; i < badCount; i++) {
    const tenant = pick(rng, tenants);
    const kind = MALFORMED_KINDS[i % MALFORMED_KINDS.length]!;
    const { value, expect } = bad(kind, rng, goodEvent(rng, tenant, now), now, limits, huge);
    records.push({ key: keyOf(tenant), value, expect, kind });
  }
  for (let i = records.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [records[i], records[j]] = [records[j]!, records[i]!];
  }
  return records;
}
