/**
 * The usage batch record (src/events/batch.ts): what a gateway writes (encodeBatch) is what the
 * JSON Schema and zod describe, and what the aggregator reads back (decodeUsageRecord) is the same
 * events; a bad event goes to the DLQ alone, as the single usage event it stands for, while the
 * rest of the batch is counted; a batch whose own fields are wrong fails as a whole. Also what
 * makes two requests one for coalescing, and the slice the gateway coalesces within.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeBatch, MAX_BATCH_EVENTS, UsageBatchSchema, batchHeaderOf } from '../../src/events/batch.ts';
import { decodeUsageEvent, decodeUsageRecord, type DecodeOptions } from '../../src/events/decode.ts';
import { UsageEventSchema, type UsageEvent } from '../../src/events/usage.ts';
import { CoalesceSlot, Emitter, sameRequest } from '../../src/gateway/emitter.ts';
import { kafkaPort } from '../../src/kafka/client.ts';
import { coalesceSliceMs } from '../../src/gateway/gateway.ts';
import { compilePolicy, parsePolicyText } from '../../src/policy/index.ts';
import { readFile } from 'node:fs/promises';

const NOW = 1_711_108_902_000;
const OPTS: DecodeOptions = { now: NOW, futureSkewMs: 60_000 };
const ref = { counterKey: '{k}:per-key', windowMs: 60_000, decidedAt: NOW - 10 };

const base = { schemaVersion: 1 as const, region: 'eu', gatewayId: 'gw-1', policyVersion: '3' };
const events: UsageEvent[] = [
  { ...base, eventTime: NOW - 5, subjects: { api_key: 'a' }, api: null, method: 'GET', path: '/x', cost: 1, outcome: { kind: 'admitted' } },
  {
    ...base,
    eventTime: NOW - 4,
    subjects: { api_key: 'b', 'x-team': 'é😀"\\' },
    api: 'Agents',
    cost: 7,
    outcome: { kind: 'refused', decision: ref },
    requestId: 'req_1',
  },
  { ...base, eventTime: NOW - 3, subjects: {}, api: 'A', path: '', cost: 2, outcome: { kind: 'shadow_refused', decision: ref } },
];
const text = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v), 'utf8');
const batchOf = (patch: Record<string, unknown> = {}, evs: unknown[] = events.map(({ schemaVersion, region, gatewayId, policyVersion, ...e }) => e)) =>
  text({ kind: 'usage-batch', schemaVersion: 1, region: 'eu', gatewayId: 'gw-1', policyVersion: '3', events: evs, ...patch });

describe('usage batch records', () => {
  test('encodeBatch writes what the schema describes, and decodeUsageRecord reads back the same events', () => {
    const value = encodeBatch(batchHeaderOf(events[0]!), events);
    assert.ok(UsageBatchSchema.safeParse(JSON.parse(value)).success);
    const r = decodeUsageRecord(text(value), OPTS);
    assert.deepEqual(r, { ok: true, events, positions: [0, 1, 2], rejected: [] });
    for (const e of events) assert.ok(UsageEventSchema.safeParse(e).success);
  });

  test('without a policy version, the events have none either', () => {
    const e = events.map(({ policyVersion, ...rest }) => rest as UsageEvent);
    const r = decodeUsageRecord(text(encodeBatch(batchHeaderOf(e[0]!), e)), OPTS);
    assert.ok(r.ok && r.events.every((x) => !('policyVersion' in x)));
    assert.deepEqual(r.ok && r.events, e);
  });

  test('a single usage event is still a record of its own', () => {
    assert.deepEqual(decodeUsageRecord(text(events[0]), OPTS), { ok: true, events: [events[0]], positions: null, rejected: [] });
  });

  test('decodeUsageEvent refuses a batch: one event was expected', () => {
    const r = decodeUsageEvent(batchOf(), OPTS);
    assert.equal(r.ok, false);
    assert.match(!r.ok ? r.detail : '', /usage batch/);
  });

  test('a bad event goes to the DLQ alone, as the usage event it stands for; the others are counted', () => {
    const evs: unknown[] = [
      { eventTime: NOW, subjects: { api_key: 'a' }, api: null, cost: 1, outcome: { kind: 'admitted' } },
      { eventTime: NOW, subjects: { api_key: 'a' }, api: null, cost: 0, outcome: { kind: 'admitted' } },
      { eventTime: NOW, subjects: { api_key: 'a' }, api: null, cost: 2_000_000, outcome: { kind: 'admitted' } },
      { eventTime: NOW + 3_600_000, subjects: { api_key: 'a' }, api: null, cost: 1, outcome: { kind: 'admitted' } },
      { eventTime: NOW, subjects: { api_key: 'a' }, api: null, cost: 1, outcome: { kind: 'admitted' }, gatewayId: 'other' },
      7,
      { eventTime: NOW, subjects: { api_key: 'b' }, api: null, cost: 1, outcome: { kind: 'admitted' } },
    ];
    const raw = batchOf({}, evs).toString().replace('"subjects":{"api_key":"b"}', '"subjects":{"api_key":"b","__proto__":"x"}');
    const r = decodeUsageRecord(text(raw), OPTS);
    assert.ok(r.ok);
    assert.deepEqual(r.positions, [0]);
    assert.deepEqual(r.events, [{ schemaVersion: 1, region: 'eu', gatewayId: 'gw-1', policyVersion: '3', ...(evs[0] as object) }]);
    assert.deepEqual(
      r.rejected.map((x) => [x.index, x.reason]),
      [
        [1, 'schema'],
        [2, 'absurd-cost'],
        [3, 'future'],
        [4, 'schema'],
        [5, 'schema'],
        [6, 'schema'],
      ],
    );
    assert.match(r.rejected[3]!.detail, /gatewayId: set on the batch/);
    assert.match(r.rejected[5]!.detail, /__proto__/);
    // Each DLQ value is a usage event on its own: fixed, it could be produced to quota.usage as is.
    const dead = JSON.parse(r.rejected[0]!.value.toString());
    assert.deepEqual(dead, { schemaVersion: 1, region: 'eu', gatewayId: 'gw-1', policyVersion: '3', ...(evs[1] as object) });
    assert.ok(decodeUsageEvent(text({ ...dead, cost: 1 }), OPTS).ok);
    // Not an object: nothing to complete, so the DLQ keeps the item as it was sent.
    assert.equal(r.rejected[4]!.value.toString(), '7');
    // It says which field it should not have set, and keeps the value it set.
    assert.equal(JSON.parse(r.rejected[3]!.value.toString()).gatewayId, 'other');
  });

  const whole: Array<[string, Buffer, string, RegExp]> = [
    ['a newer batch layout', batchOf({ schemaVersion: 2 }), 'unsupported-version', /usage batch schemaVersion 2/],
    ['no events', batchOf({}, []), 'schema', /1 to 10000/],
    [
      'too many events',
      batchOf(
        {},
        Array.from({ length: MAX_BATCH_EVENTS + 1 }, () => ({})),
      ),
      'schema',
      /10001 events/,
    ],
    ['events is not an array', batchOf({ events: { 0: {} } }), 'schema', /events/],
    ['no gateway id', batchOf({ gatewayId: '' }), 'schema', /gatewayId/],
    ['an unknown field', batchOf({ extra: 1 }), 'schema', /extra: Unrecognized key/],
    ['a reserved key', text(batchOf().toString().replace('"region"', '"__proto__":1,"region"')), 'schema', /__proto__/],
  ];
  for (const [name, value, reason, detail] of whole) {
    test(`the whole record fails on its own fields: ${name}`, () => {
      const r = decodeUsageRecord(value, OPTS);
      assert.equal(r.ok, false);
      assert.equal(!r.ok && r.reason, reason);
      assert.match(!r.ok ? r.detail : '', detail);
    });
  }
});

describe('coalescing', () => {
  const e = events[0]!;
  const same = (a: Partial<UsageEvent>, b: Partial<UsageEvent>, slice = 1_000) => sameRequest({ ...e, ...a }, { ...e, ...b }, slice);

  test('the same request in the same slice is the same; anything else that replay could see is not', () => {
    const slice0 = Math.floor(e.eventTime / 1_000) * 1_000;
    assert.ok(same({ eventTime: slice0 }, { eventTime: slice0 + 999 }));
    assert.ok(same({ subjects: { a: '1', b: '2' } }, { subjects: { b: '2', a: '1' } }), 'subjects in another order are the same subjects');
    assert.ok(same({ outcome: { kind: 'refused', decision: ref } }, { outcome: { kind: 'refused', decision: { ...ref } } }));
    const different: Array<Partial<UsageEvent>> = [
      { eventTime: slice0 + 1_000 },
      { subjects: { api_key: 'other' } },
      { subjects: { api_key: 'a', account: 'x' } },
      { subjects: {} },
      { api: 'Agents' },
      { method: 'POST' },
      { method: undefined },
      { path: '/y' },
      { path: undefined },
      { policyVersion: '4' },
      { outcome: { kind: 'refused', decision: ref } },
      { outcome: { kind: 'shadow_refused', decision: ref } },
    ];
    for (const patch of different) {
      assert.ok(!same({ eventTime: slice0 }, { eventTime: slice0, ...patch }), JSON.stringify(patch));
      assert.ok(!same({ eventTime: slice0, ...patch }, { eventTime: slice0 }), `${JSON.stringify(patch)}, the other way round`);
    }
    for (const decision of [
      { ...ref, counterKey: 'other' },
      { ...ref, windowMs: 1_000 },
      { ...ref, decidedAt: 1 },
    ])
      assert.ok(!same({ outcome: { kind: 'refused', decision: ref } }, { outcome: { kind: 'refused', decision } }), JSON.stringify(decision));
  });

  test('no subject value can make two different requests look the same', () => {
    assert.ok(!same({ subjects: { a: '1","b":"2' } }, { subjects: { a: '1', b: '2' } }));
    assert.ok(!same({ api: 'null' }, { api: null }));
    assert.ok(!same({ path: '' }, { path: undefined }));
    assert.ok(!same({ subjects: { a: '1' } }, { subjects: { a: '1', ['__proto__']: '1' } }));
  });

  for (const [how, group] of [
    ['a group named by a string', () => 'org-counter'],
    ["a group's slot kept by the caller", () => new CoalesceSlot()],
  ] as const) {
    test(`the emitter merges only a tenant's identical requests, alternating ones too, and keeps every request's cost (${how})`, () => {
      // A real Emitter that is never started: enqueue only buffers (nothing here reaches Kafka).
      const emitter = new Emitter({ kafka: kafkaPort({ brokers: ['127.0.0.1:1'], clientId: 'unit' }), topic: 'unit.quota.usage', coalesceSliceMs: 1_000 });
      const g = group();
      const at = Math.floor(NOW / 1_000) * 1_000;
      const event = (user: string, t = at): UsageEvent => ({ ...e, eventTime: t, subjects: { organization: 'o', user }, cost: 1 });
      for (let i = 0; i < 10; i++) emitter.enqueue('t1', event(i % 2 ? 'u1' : 'u2'), undefined, false, g);
      emitter.enqueue('t2', event('u1'), undefined, false, g); // another tenant: never merged
      emitter.enqueue('t1', event('u1', at + 1_000), undefined, false, g); // the next slice
      emitter.enqueue('t1', { ...event('u1'), requestId: 'r1' }, undefined, false, g); // an id: its own event
      assert.equal(emitter.buffered, 5);
      assert.equal(emitter.stats.enqueued, 13);
      assert.equal(emitter.stats.coalesced, 8);
    });
  }

  test('the slice divides every bucket size of the policy', async () => {
    const talkpilot = await readFile(new URL('../../policies/talkpilot.yaml', import.meta.url), 'utf8');
    for (const [text, expected] of [
      [talkpilot, 1_000], // 1 s buckets for the minute, 1 min buckets for the hour
      [talkpilot.replace('window: 60s, kind: fixed', 'window: 60s, kind: fixed, resolution: 1500ms'), 500],
    ] as const) {
      const policy = compilePolicy(parsePolicyText(text));
      const buckets = policy.rules.flatMap((r) => r.limits.map((l) => l.bucketMs));
      const slice = coalesceSliceMs(policy);
      assert.equal(slice, expected, `buckets ${buckets}`);
      assert.ok(buckets.every((b) => b % slice === 0));
    }
  });
});
