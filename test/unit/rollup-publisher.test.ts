/**
 * The aggregator's rollup publisher (src/aggregator/rollups.ts) on its own: what a flush sends and
 * holds back. The producer here records what it is given (the integration test uses a real Kafka).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RollupPublisher } from '../../src/aggregator/rollups.ts';
import { decodeRollup, type Rollup } from '../../src/events/index.ts';
import { CounterState } from '../../src/fold/counter-state.ts';
import type { OutgoingRecord, Producer } from '../../src/kafka/port.ts';
import { configureLogging, logger } from '../../src/log.ts';
import { compilePolicy, parsePolicyText, resolve } from '../../src/policy/index.ts';

configureLogging({ level: 'error' }); // the failed send's warning is expected

const T0 = 1_795_507_200_000;
const policy = compilePolicy(
  parsePolicyText(
    `
version: "unit"
product: rollups unit test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 1000, window: 10s, resolution: 1s }] }
`,
    'unit.yaml',
  ),
);

function counter(apiKey: string): CounterState {
  const r = resolve(policy, { subjects: { api_key: apiKey } });
  assert.ok(r.kind === 'resolved' && !r.unlimited);
  return new CounterState(r.counterKey, r.tenantKey, r.rule, r.limits, r.scopeKey);
}

function recorder(failures = 0) {
  const sent: Rollup[] = [];
  let fail = failures;
  const producer: Producer = {
    connect: async () => {},
    disconnect: async () => {},
    send: async (records: readonly OutgoingRecord[]) => {
      if (fail-- > 0) throw new Error('broker gone');
      for (const r of records) {
        const d = decodeRollup(r.value as string);
        assert.ok(d.ok);
        sent.push(d.rollup);
      }
    },
  };
  return { producer, sent };
}

function publisher(producer: Producer, busy = new Set<number>()) {
  return new RollupPublisher({ producer, topic: 'quota.rollup', region: 'east', busy: (p) => busy.has(p), clock: () => T0 + 5_000, log: logger('test') });
}

describe('rollup publisher', () => {
  test('a flush sends each marked bucket once with its absolute total; a busy partition waits', async () => {
    const { producer, sent } = recorder();
    const busy = new Set([2]);
    const rp = publisher(producer, busy);
    const a = counter('a');
    const b = counter('b');
    for (let i = 0; i < 5; i++) a.counter.add(T0 + 100 * i, 2);
    b.counter.add(T0 + 1_500, 3);
    rp.mark(1, a, 1_000, Math.floor(T0 / 1_000));
    rp.mark(1, a, 1_000, Math.floor(T0 / 1_000)); // marked twice before a flush: sent once
    rp.mark(2, b, 1_000, Math.floor((T0 + 1_500) / 1_000));
    await rp.flush();
    assert.deepEqual(
      sent.map((r) => [r.counterKey, r.bucketIndex, r.total, r.region]),
      [[a.counterKey, Math.floor(T0 / 1_000), 10, 'east']],
    );
    assert.equal(rp.pending, 1, "b's partition had a batch in flight");
    busy.clear();
    await rp.flush();
    assert.deepEqual(sent.at(-1)!.total, 3);
    assert.equal(rp.pending, 0);
  });

  test('a failed send is marked again and goes with the next flush; stop sends what is left', async () => {
    const { producer, sent } = recorder(1);
    const rp = publisher(producer);
    const a = counter('a');
    a.counter.add(T0, 1);
    rp.mark(0, a, 1_000, Math.floor(T0 / 1_000));
    await rp.flush();
    assert.equal(sent.length, 0);
    assert.equal(rp.pending, 1);
    a.counter.add(T0 + 10, 1);
    await rp.stop();
    assert.deepEqual(
      sent.map((r) => r.total),
      [2],
      'the total as it is when sent',
    );
  });

  test('a bucket that left its ring counts in no window: dropped; markCounter marks every bucket held', async () => {
    const { producer, sent } = recorder();
    const rp = publisher(producer);
    const a = counter('a');
    a.counter.add(T0, 1);
    a.counter.add(T0 + 2_000, 1);
    a.counter.add(T0 + 4_000, 1);
    rp.markCounter(3, a);
    assert.equal(rp.pending, 3);
    a.counter.add(T0 + 11_500, 1); // the ring (10 s of 1 s buckets) no longer holds T0's bucket
    rp.mark(3, a, 1_000, Math.floor((T0 + 11_500) / 1_000));
    await rp.flush();
    assert.deepEqual(
      sent.map((r) => r.bucketIndex - Math.floor(T0 / 1_000)).sort((x, y) => x - y),
      [2, 4, 11],
    );
  });
});
