/**
 * A fleet of gateways against the real broker, Redis and an in-process aggregator (DESIGN §4):
 * a block earned on one gateway reaches every gateway; a restarted gateway rebuilds its blocks from
 * the compacted decisions topic; a Kafka outage never holds up a request and loses nothing that
 * fits in the buffer (and counts exactly what did not); coalescing keeps every request's cost.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { resolve } from '../../src/policy/index.ts';
import type { CheckRequest, CheckResult } from '../../src/gateway/gateway.ts';
import type { Decision } from '../../src/events/index.ts';
import { kafkaPort, waitForCluster } from '../../src/kafka/client.ts';
import { ensureTopics, topicNames, topicSpecs } from '../../src/kafka/topics.ts';
import { startLocalKafka } from '../../src/stack/kafka-local.ts';
import { programsFrom } from '../../src/stack/prereqs.ts';
import { StoreKeys } from '../../src/store/index.ts';
import { configureLogging } from '../../src/log.ts';
import { deferred, testKafkaClient, testRedis, uniqueName } from '../support/integration.ts';
import { aggregatorEnv, policyFromText, storedCounts } from '../support/aggregator.ts';
import { cleanupStack, drained, eventually, eventsOf, Fleet, fromGateway, usageEvents } from '../support/fleet.ts';
import { javaPartition } from '../../src/kafka/partition.ts';

// The outage test makes the gateways warn on every retry; the assertions say what matters.
configureLogging({ level: 'error' });

const policyText = (limits: string) => `
version: "fleet-test"
product: gateway fleet test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: json_error, error_code: RATE_LIMITED, message: "Rate limit exceeded. Try again in {retry_after} seconds.", headers: [retry-after, x-ratelimit, ietf] }
rules:
  - id: per-key
    default: true
    scope: api_key
    limits: ${limits}
`;
const SMALL = policyText('[{ limit: 10, window: 4s, resolution: 100ms }]');

const req = (apiKey: string): CheckRequest => ({ method: 'GET', path: '/v1/calls', headers: { 'x-api-key': apiKey } });
const reasons = (results: CheckResult[]) => results.map((r) => r.reason);
/** What a client sees of a refusal. */
/**
 * What a client sees of a check. Each refusal carries a request id minted for it (issue #12), so the
 * id is checked on its own and stands as `<id>` here: two gateways refuse the same way, with ids of their own.
 */
const seen = (r: CheckResult) => {
  const id = (text: string | undefined) => (r.requestId === undefined || text === undefined ? text : text.replaceAll(r.requestId, '<id>'));
  const headers = Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, id(v)]));
  return {
    allowed: r.allowed,
    status: r.status,
    reason: r.reason,
    message: r.message,
    body: id(r.body),
    contentType: r.contentType,
    headers,
    retryAfterSeconds: r.retryAfterSeconds,
  };
};
/** Progress lines in the test's diagnostics: where the time goes. */
const marker = (t: { diagnostic(m: string): void }) => {
  const t0 = Date.now();
  return (what: string) => t.diagnostic(`${what} at ${((Date.now() - t0) / 1000).toFixed(1)}s`);
};
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

describe('gateway fleet: one block, every gateway', () => {
  test('traffic through gateway A alone blocks the key on B and C, with the same refusal; all admit again when the window rolls; refused events consume no quota', {
    timeout: 90_000,
  }, async (t) => {
    const mark = marker(t);
    const env = await aggregatorEnv(t, 3);
    const { policy } = await policyFromText(SMALL);
    const fleet = new Fleet(env.defer);
    const aggregator = await fleet.aggregator(env, policy);
    mark('aggregator started');
    // One clock for the fleet, frozen while the three refusals are compared (Retry-After counts seconds from now).
    let frozen: number | undefined;
    const clock = () => frozen ?? Date.now();
    // One usage event per request (no coalescing), so the aggregator's event counts below are request counts.
    const [a, b, c] = ['A', 'B', 'C'].map((name) =>
      fleet.gateway({ policy, kafka: env.gatewayKafka, topicPrefix: env.topicPrefix, gatewayId: `${name}-${uniqueName('gw')}`, clock, coalesce: false }),
    );
    const gateways = [a!, b!, c!];
    await Promise.all(gateways.map((g) => g.whenWarm()));
    mark('gateways warm');

    const key = 'fleet-key';
    const r = resolve(policy, req(key));
    assert.equal(r.kind, 'resolved');
    const counterKey = r.kind === 'resolved' ? r.counterKey : '';

    // 15 requests through A: it admits the limit and then refuses on its own count (no decision yet:
    // check() never waits, and this loop never yields to the decision feed).
    const first = Array.from({ length: 15 }, () => a!.check(req(key)));
    assert.deepEqual(reasons(first), [...Array(10).fill('admitted'), ...Array(5).fill('local-limit')]);
    assert.equal(b!.stats.checks + c!.stats.checks, 0, 'B and C saw none of the traffic');

    // The aggregator's block reaches every gateway through quota.decisions.
    await eventually('the block on every gateway', () => gateways.every((g) => g.cache.get(counterKey, Date.now()) !== undefined), 30_000);
    mark('block on every gateway');
    const block = a!.cache.get(counterKey, Date.now())!;
    assert.equal(block.limit, 10);
    assert.equal(block.observed, 10);

    frozen = Date.now();
    const refusals = gateways.map((g) => g.check(req(key)));
    frozen = undefined;
    for (const [i, refusal] of refusals.entries()) {
      assert.equal(refusal.reason, 'blocked', `gateway ${'ABC'[i]} refuses the key on the block`);
      assert.equal(refusal.status, 429);
      assert.deepEqual(seen(refusal), seen(refusals[0]!), `gateway ${'ABC'[i]} refuses exactly as A does`);
      assert.match(refusal.requestId ?? '', /^req_[a-z0-9]{16}$/, `gateway ${'ABC'[i]} minted the refusal's request id`);
    }
    assert.equal(JSON.parse(refusals[0]!.body!).error.code, 'RATE_LIMITED');
    assert.ok(Number(refusals[0]!.headers['Retry-After']) >= 1);

    // Everything so far is counted: Redis holds the admitted requests only, the refused ones are counted as refused.
    const emitted = () => sum(gateways.map((g) => g.emitter!.stats.enqueued));
    await Promise.all(gateways.map((g) => drained(g, 30_000)));
    await eventually('the aggregator to commit every event', () => aggregator.stats.committed >= emitted(), 30_000);
    const admitted = () => sum(gateways.map((g) => g.stats.admitted));
    const refused = () => sum(gateways.map((g) => g.stats.refused));
    assert.deepEqual([admitted(), refused(), emitted()], [10, 8, 18]);
    assert.equal(aggregator.stats.committed, 18);
    assert.equal(aggregator.stats.counted, admitted(), 'the aggregator counted what the gateways admitted');
    assert.equal(aggregator.stats.refusedEvents, refused(), 'and counted the refusals as refused');
    const keys = new StoreKeys(env.keyPrefix);
    const stored = (await storedCounts(testRedis(t), (k) => keys.counter(k), [counterKey])).get(counterKey)!;
    assert.equal(sum([...stored.values()]), 10, `Redis holds the 10 admitted requests only (${JSON.stringify([...stored])})`);

    // When the window rolls the block lapses everywhere (at `until`, or on the aggregator's unblock), and all three admit.
    await eventually('the window to roll', () => Date.now() >= block.until && gateways.every((g) => g.cache.get(counterKey, Date.now()) === undefined), 30_000);
    mark('window rolled');
    const after = gateways.map((g) => g.check(req(key)));
    assert.deepEqual(reasons(after), ['admitted', 'admitted', 'admitted']);

    await Promise.all(gateways.map((g) => drained(g, 30_000)));
    await eventually('the aggregator to commit every event', () => aggregator.stats.committed >= emitted(), 30_000);
    assert.equal(aggregator.stats.committed, 21);
    assert.equal(aggregator.stats.counted, admitted());
    assert.equal(aggregator.stats.counted, 13);
    assert.equal(aggregator.stats.refusedEvents, refused());
    assert.equal(aggregator.stats.dlq, 0);
  });
});

describe('gateway fleet: a restarted gateway', () => {
  test('a new gateway instance rebuilds every live block from the compacted decisions topic before it is warm; other keys pass', {
    timeout: 90_000,
  }, async (t) => {
    const mark = marker(t);
    const env = await aggregatorEnv(t, 3);
    // A window long enough that the blocks outlive the restart.
    const { policy } = await policyFromText(policyText('[{ limit: 10, window: 60s }]'));
    const fleet = new Fleet(env.defer);
    const aggregator = await fleet.aggregator(env, policy);
    const blocks: string[] = [];
    aggregator.on('decision', (d: Decision) => d.state === 'block' && blocks.push(d.counterKey));
    const gw = (name: string) => fleet.gateway({ policy, kafka: env.gatewayKafka, topicPrefix: env.topicPrefix, gatewayId: `${name}-${uniqueName('gw')}` });
    const a = gw('A');
    const b = gw('B');
    await Promise.all([a.whenWarm(), b.whenWarm()]);

    // Several blocked keys, so the decisions are spread over the topic's partitions.
    const blocked = Array.from({ length: 6 }, (_, i) => `restart-key-${i}`);
    const counterKeys = blocked.map((k) => {
      const r = resolve(policy, req(k));
      assert.equal(r.kind, 'resolved');
      return r.kind === 'resolved' ? r.counterKey : '';
    });
    for (const k of blocked) {
      const results = Array.from({ length: 11 }, () => a.check(req(k)));
      assert.equal(results.filter((r) => r.allowed).length, 10);
    }
    await eventually('the blocks on gateway B', () => counterKeys.every((k) => b.cache.get(k, Date.now()) !== undefined), 30_000);
    mark('blocks live on B');
    assert.deepEqual(blocks.sort(), [...counterKeys].sort(), 'one block per key');

    await b.stop();
    mark('B stopped');
    const b2 = gw('B2');
    assert.equal(b2.warm, false, 'a new instance starts cold');
    assert.equal(b2.cache.size, 0);
    await b2.whenWarm(30_000);
    mark('B2 warm');
    assert.equal(b2.stats.checks, 0, 'B2 has seen no traffic at all');
    assert.equal(b2.local.size, 0);
    const firsts = blocked.map((k) => b2.check(req(k)));
    assert.deepEqual(
      reasons(firsts),
      blocked.map(() => 'blocked'),
      'its very first check of each blocked key is refused on the block',
    );
    assert.ok(firsts.every((r) => r.status === 429));
    // A restart does not block everyone.
    const others = Array.from({ length: 5 }, (_, i) => b2.check(req(`restart-other-${i}`)));
    assert.deepEqual(
      reasons(others),
      others.map(() => 'admitted'),
    );
  });
});

describe('gateway fleet: Kafka stopped', () => {
  test('the gateway keeps answering; what fits in the buffer arrives exactly once after the restart, the rest is dropped and counted exactly; gateways started meanwhile answer under their fallback and warm up later', {
    timeout: 240_000,
  }, async (t) => {
    const mark = marker(t);
    const defer = cleanupStack(t);
    // A short broker session: the restarted node's previous registration is fenced in ~3 s, not 9.
    const cluster = await startLocalKafka({
      programs: programsFrom(process.env),
      quickStart: true,
      overrides: { 'broker.session.timeout.ms': 3_000, 'broker.heartbeat.interval.ms': 500 },
    });
    defer(() => cluster.stop());
    mark('private Kafka up');
    const node = cluster.nodes[0]!;
    const restart = async () => {
      await cluster.startNode(node.nodeId);
      await waitForCluster(cluster.brokers, { timeoutMs: 90_000, isAlive: () => node.process.isRunning() });
      mark('node restarted');
    };
    // If an assertion fails while the node is down, bring it back so the gateways stop promptly.
    defer(async () => {
      if (!node.process.isRunning()) await restart().catch(() => {});
    });
    // Quicker to give up a connection than the defaults, so the outage is noticed (a failed send) in
    // seconds rather than a minute; what the gateway does about it is the same.
    const kafka = {
      brokers: cluster.brokers,
      clientId: uniqueName('fleet-outage'),
      client: testKafkaClient(),
      minLogLevel: 'nothing' as const,
      connectionTimeoutMs: 1_000,
      retry: { initialRetryMs: 100, retries: 3, maxRetryMs: 1_000 },
    };
    const topics = topicNames('');
    const admin = kafkaPort(kafka).admin();
    await admin.connect();
    await ensureTopics(admin, topicSpecs(topics, { usagePartitions: 3 }));
    await admin.disconnect();
    const { policy } = await policyFromText(SMALL);
    const fleet = new Fleet(defer);
    const BOUND = 500;
    const gw = fleet.gateway({ policy, kafka, maxBuffered: BOUND, gatewayId: uniqueName('outage-gw') });
    await gw.whenWarm(60_000);
    // One event through, so the producer is connected when the node dies, then an empty buffer.
    assert.equal(gw.check({ ...req('before'), requestId: 'before' }).allowed, true);
    await drained(gw, 30_000);
    mark('gateway warm, producer connected');

    // Round 1: 300 checks (below the bound) over 10 keys while Kafka is away.
    await cluster.killNode(node.nodeId);
    mark('node killed');
    const round1 = Array.from({ length: 300 }, (_, i) => gw.check({ ...req(`out-${i % 10}`), requestId: `r1-${i}` }));
    for (let k = 0; k < 10; k++) {
      const mine = round1.filter((_, i) => i % 10 === k);
      assert.deepEqual(reasons(mine), [...Array(10).fill('admitted'), ...Array(20).fill('local-limit')], 'the local limits still hold');
    }
    assert.equal(gw.emitter!.buffered, 300);
    assert.equal(gw.emitter!.stats.dropped, 0);

    // Gateways started while Kafka is away answer at once under their fallback.
    const closed = fleet.gateway({ policy, kafka, fallback: 'closed', gatewayId: uniqueName('closed-gw') });
    const open = fleet.gateway({ policy, kafka, fallback: 'open', gatewayId: uniqueName('open-gw') });
    const coldClosed = closed.check(req('cold'));
    assert.deepEqual([coldClosed.allowed, coldClosed.reason, coldClosed.status], [false, 'fallback-closed', 429]);
    const coldOpen = Array.from({ length: 12 }, () => open.check(req('cold')));
    assert.deepEqual(
      reasons(coldOpen),
      coldOpen.map(() => 'fallback-open'),
      'open admits even past the limit',
    );
    assert.deepEqual([gw.warm, closed.warm, open.warm], [true, false, false]);
    assert.equal(gw.emitter!.stats.sent, 1, 'nothing reached Kafka while it was away');
    await eventually('a failed send while Kafka is away', () => gw.emitter!.stats.sendFailures > 0, 90_000);
    mark('a send failed');

    await restart();
    await drained(gw, 90_000);
    mark('round 1 delivered');
    let events = fromGateway(await usageEvents(kafkaPort(kafka), topics.usage), gw.id).events;
    const r1 = events.filter((e) => e.requestId?.startsWith('r1-'));
    const perKey = (es: typeof events) => {
      const n: Record<string, number> = {};
      for (const e of es) n[JSON.stringify(e.subjects)] = (n[JSON.stringify(e.subjects)] ?? 0) + 1;
      return JSON.stringify(n);
    };
    assert.equal(r1.length, 300, `every event of the outage arrived (read, per key: ${perKey(r1)}; the emitter: ${JSON.stringify(gw.emitter!.stats)})`);
    assert.equal(sum(r1.map((e) => e.cost)), 300);
    assert.equal(new Set(r1.map((e) => e.requestId)).size, 300, 'each exactly once');
    assert.equal(r1.filter((e) => e.outcome.kind === 'admitted').length, 100);
    assert.equal(events.length, 301);
    assert.equal(gw.emitter!.stats.dropped, 0);

    await Promise.all([closed.whenWarm(90_000), open.whenWarm(90_000)]);
    mark('late gateways warm');
    assert.equal(closed.check(req('warm-key')).reason, 'admitted', 'warm, the closed gateway admits a key with room');
    await Promise.all([closed.stop(), open.stop()]);

    // Round 2: more than the bound while Kafka is away.
    await cluster.killNode(node.nodeId);
    mark('node killed again');
    const ROUND2 = 800;
    const round2 = Array.from({ length: ROUND2 }, (_, i) => gw.check({ ...req(`out2-${i % 40}`), requestId: `r2-${i}` }));
    assert.equal(round2.length, ROUND2, 'every check answered');
    assert.equal(gw.emitter!.stats.dropped, ROUND2 - BOUND, 'drops counted exactly');
    assert.equal(gw.emitter!.buffered, BOUND);
    await restart();
    await drained(gw, 90_000);
    mark('round 2 delivered');
    events = fromGateway(await usageEvents(kafkaPort(kafka), topics.usage), gw.id).events;
    const r2 = events.filter((e) => e.requestId?.startsWith('r2-'));
    assert.equal(r2.length, BOUND, 'exactly the buffered events arrived');
    assert.equal(sum(r2.map((e) => e.cost)), BOUND);
    assert.deepEqual(
      new Set(r2.map((e) => e.requestId)),
      new Set(Array.from({ length: BOUND }, (_, i) => `r2-${i}`)),
      'the first ones, each once; the overflow was dropped',
    );
    assert.equal(events.length, 301 + BOUND);
    assert.equal(gw.emitter!.stats.dropped, ROUND2 - BOUND);
  });
});

describe('gateway fleet: coalescing', () => {
  test('1,000 identical checks become a few usage events whose costs sum to exactly 1,000, and the aggregator counts 1,000', { timeout: 90_000 }, async (t) => {
    const env = await aggregatorEnv(t, 3);
    const { policy } = await policyFromText(policyText('[{ limit: 1000000, window: 60s }]'));
    const fleet = new Fleet(env.defer);
    const aggregator = await fleet.aggregator(env, policy);
    const gw = fleet.gateway({ policy, kafka: env.gatewayKafka, topicPrefix: env.topicPrefix, coalesce: true });
    await gw.whenWarm();
    const results: CheckResult[] = [];
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 100; i++) results.push(gw.check(req('chatty')));
      await nextTurn();
    }
    assert.ok(results.every((r) => r.reason === 'admitted'));
    await drained(gw, 30_000);
    const mine = fromGateway(await usageEvents(env.kafka, env.topics.usage), gw.id);
    t.diagnostic(`1,000 checks became ${mine.messages} usage event(s)`);
    assert.equal(mine.cost, 1_000, "every request is in some event's cost");
    assert.ok(mine.messages <= 50, `far fewer messages than requests (${mine.messages})`);
    assert.equal(mine.messages, 1_000 - gw.emitter!.stats.coalesced);
    assert.deepEqual([gw.emitter!.stats.enqueued, gw.emitter!.stats.sent, gw.emitter!.stats.dropped], [1_000, 1_000, 0]);
    assert.ok(mine.events.every((e) => e.subjects.api_key === 'chatty' && e.outcome.kind === 'admitted'));

    const r = resolve(policy, req('chatty'));
    assert.equal(r.kind, 'resolved');
    const counterKey = r.kind === 'resolved' ? r.counterKey : '';
    await eventually('the aggregator to commit the events', () => aggregator.stats.committed >= mine.messages, 30_000);
    const keys = new StoreKeys(env.keyPrefix);
    const stored = (await storedCounts(testRedis(t), (k) => keys.counter(k), [counterKey])).get(counterKey)!;
    assert.equal(sum([...stored.values()]), 1_000, 'Redis counts each coalesced event at its cost');
  });
});

describe('gateway fleet: usage batch records', () => {
  test("each batch record is on the partition of its events' tenants, and an event near a limit does not wait for the linger", {
    timeout: 90_000,
  }, async (t) => {
    const env = await aggregatorEnv(t, 6);
    const { policy } = await policyFromText(policyText('[{ limit: 10, window: 60s }]'));
    const fleet = new Fleet(env.defer);
    // A linger far longer than the test waits for the urgent event: only cutting it short delivers in time.
    const gw = fleet.gateway({ policy, kafka: env.gatewayKafka, topicPrefix: env.topicPrefix, lingerMs: 8_000, followOverrides: false });
    await gw.whenWarm();

    // 7 of 10 on one key: not near its limit yet, so the events wait for the linger.
    for (let i = 0; i < 7; i++) assert.equal(gw.check(req('near-key')).reason, 'admitted');
    await nextTurn();
    const started = Date.now();
    // The 8th takes the key to 80% of its limit: urgent.
    assert.equal(gw.check(req('near-key')).reason, 'admitted');
    await eventually('the urgent event to reach Kafka', () => gw.emitter!.stats.sent >= 8, 6_000);
    const tookMs = Date.now() - started;
    t.diagnostic(`the event near the limit reached Kafka ${tookMs} ms after its check (linger 8,000 ms)`);
    assert.ok(tookMs < 4_000, `sent after ${tookMs} ms: it waited for the linger`);

    // 300 tenants, 2 requests each, in one send.
    for (let i = 0; i < 300; i++) for (let k = 0; k < 2; k++) gw.check(req(`tenant-${i}`));
    await drained(gw, 30_000);
    const kafka = env.kafka;
    const admin = kafka.admin();
    await admin.connect();
    const ends = await admin.offsets(env.topics.usage).finally(() => admin.disconnect());
    const total = ends.reduce((n, p) => n + p.high - p.low, 0);
    const byPartition = new Map<number, Array<Record<string, unknown>>>();
    let read = 0;
    const done = deferred(`every usage record (${total})`, 30_000);
    const reader = kafka.read(
      env.topics.usage,
      new Map(ends.map((p) => [p.partition, p.low])),
      (partition, records) => {
        for (const r of records) {
          if (!byPartition.has(partition)) byPartition.set(partition, []);
          byPartition.get(partition)!.push(JSON.parse(r.value!.toString()));
        }
        read += records.length;
        if (read >= total) done.resolve();
      },
      { label: uniqueName('placement') },
    );
    try {
      await done.promise;
    } finally {
      await reader.stop();
    }
    let events = 0;
    let requests = 0;
    for (const [partition, records] of byPartition) {
      for (const record of records) {
        assert.equal(record.kind, 'usage-batch', 'the gateway sends batch records');
        for (const e of eventsOf(record)) {
          const r = resolve(policy, { subjects: e.subjects });
          assert.ok(r.kind === 'resolved');
          assert.equal(javaPartition(r.tenantKey, 6), partition, `${r.tenantKey} is on the partition its keyed record would take`);
          events++;
          requests += e.cost;
        }
      }
    }
    assert.equal(byPartition.size, 6, 'the tenants spread over every partition');
    assert.ok(total <= 6 + 2, `${total} records for ${events} events`);
    assert.equal(requests, 8 + 600, 'every request is in some event');
    // Identical requests in one slice coalesce: a tenant's 2 are one event unless a slice boundary falls between them.
    assert.ok(events >= 301 && events <= 310, `${events} events for 608 requests`);
  });
});
