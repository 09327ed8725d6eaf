/**
 * The hot path's hand-written check (src/events/check.ts) against zod, the source of truth: on every
 * event of a corpus of valid and invalid ones, `isValidUsageEvent` must say yes exactly when zod's
 * UsageEventSchema accepts the event and it holds no reserved key (the decoder rejects those before
 * either runs). The corpus: the malformed-record corpus's JSON values, and every field of a few valid
 * events removed, set to each of a set of odd values, or joined by an unknown one, one at a time and
 * at every depth.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isValidUsageEvent } from '../../src/events/check.ts';
import { findReservedKey } from '../../src/events/reserved.ts';
import { MAX_EVENT_COST, UsageEventSchema, type UsageEvent } from '../../src/events/usage.ts';
import { corpus } from '../support/malformed.ts';

const NOW = 1_711_108_902_000;
const ref = { counterKey: '{k}:per-key', windowMs: 60_000, decidedAt: NOW - 1 };

const VALID: UsageEvent[] = [
  {
    schemaVersion: 1,
    eventTime: NOW,
    region: 'eu',
    gatewayId: 'gw-1',
    subjects: { api_key: 'k', account: 'a' },
    api: 'Agents',
    method: 'GET',
    path: '/agents',
    cost: 3,
    outcome: { kind: 'admitted' },
    requestId: 'req_1',
    policyVersion: '7',
  },
  { schemaVersion: 1, eventTime: 0, region: 'r', gatewayId: 'g', subjects: {}, api: null, cost: 1, outcome: { kind: 'refused', decision: ref } },
  {
    schemaVersion: 1,
    eventTime: NOW,
    region: 'r',
    gatewayId: 'g',
    subjects: { '': '' },
    api: 'A',
    path: '',
    cost: MAX_EVENT_COST,
    outcome: { kind: 'shadow_refused', decision: ref },
  },
];

const ODD: unknown[] = [
  null,
  true,
  0,
  -0,
  -1,
  1,
  1.5,
  2,
  MAX_EVENT_COST,
  MAX_EVENT_COST + 1,
  2 ** 53,
  2 ** 53 - 1,
  1e300,
  '',
  'x',
  '1',
  'admitted',
  'refused',
  '__proto__',
  [],
  ['x'],
  {},
  { kind: 'admitted' },
  { kind: 'refused' },
  { ...ref },
  { api_key: 'k' },
  { api_key: 1 },
];

/** Every value reachable by one change to `value`: each field (at any depth) removed, replaced by each odd value, or an unknown key added. */
function* variants(value: unknown): Generator<unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return;
  const fields = value as Record<string, unknown>;
  yield { ...fields, unexpected: 1 };
  yield { ...fields, constructor: 'x' };
  for (const key of Object.keys(fields)) {
    const { [key]: _, ...rest } = fields;
    yield rest;
    for (const odd of ODD) yield { ...fields, [key]: odd };
    for (const inner of variants(fields[key])) yield { ...fields, [key]: inner };
  }
}

function agree(raw: unknown): void {
  const zod = UsageEventSchema.safeParse(raw).success && findReservedKey(raw) === undefined;
  assert.equal(isValidUsageEvent(raw), zod, `the fast check says ${!zod}, zod says ${zod}, for ${JSON.stringify(raw)}`);
}

describe('isValidUsageEvent agrees with UsageEventSchema', () => {
  test('on valid events, and on every one-change variant of them', () => {
    let n = 0;
    let valid = 0;
    for (const event of VALID) {
      agree(event);
      for (const v of variants(event)) {
        // Through JSON, as the decoder sees it: a "__proto__" key becomes an own property.
        const raw = JSON.parse(JSON.stringify(v).replace('"constructor":"x"', '"__proto__":"x"'));
        agree(raw);
        n++;
        if (isValidUsageEvent(raw)) valid++;
      }
    }
    assert.ok(n > 1_000, `${n} variants`);
    assert.ok(valid > 20 && valid < n / 2, `both answers are exercised (${valid} of ${n} valid)`);
  });

  test('on the malformed-record corpus (every JSON value in it)', () => {
    const records = corpus({ seed: 7, good: 300, bad: 600, tenants: ['t1', 't2', 't3'], now: NOW, hugeChars: 64 });
    let parsed = 0;
    for (const r of records) {
      let raw: unknown;
      try {
        raw = JSON.parse(r.value?.toString('utf8') ?? '');
      } catch {
        continue;
      }
      parsed++;
      agree(raw);
      if (r.expect === 'good') assert.ok(isValidUsageEvent(raw), `a good record: ${r.value}`);
    }
    assert.ok(parsed > 700, `${parsed} JSON values`);
  });

  test('reserved keys, which zod does not see, are refused', () => {
    for (const text of [
      '{"__proto__": 7}',
      '{"subjects": {"__proto__": "x"}}',
      '{"outcome": {"kind": "admitted", "__proto__": {}}}',
      '{"outcome": {"kind": "refused", "decision": {"__proto__": 1}}}',
    ]) {
      const raw = { ...VALID[0], ...JSON.parse(text) };
      const reparsed = JSON.parse(JSON.stringify(VALID[0]).replace(/}$/, `,${text.slice(1)}`));
      for (const r of [raw, reparsed]) agree(r);
    }
  });
});
