import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { configureLogging } from '../../src/log.ts';
import { openUsageStore, StoreKeys, bucketField } from '../../src/store/index.ts';
import { readDlqHeaders } from '../../src/aggregator/dlq.ts';
import { decodeUsageEvent } from '../../src/events/decode.ts';
import type { BreachRecord, Decision, UsageEvent } from '../../src/events/index.ts';
import { startLocalRedis } from '../../src/stack/redis-local.ts';
import { programsFrom } from '../../src/stack/prereqs.ts';
import { Redis } from 'ioredis';
import { corpus, corpusDecodeOptions, goodEvent, prng } from '../support/malformed.ts';
import { javaPartition } from '../../src/kafka/partition.ts';
import type { DlqReason } from '../../src/events/decode.ts';
import { deferred, services, testRedis, uniqueName } from '../support/integration.ts';
import { aggregatorCommand } from '../../src/cli/aggregator.ts';
import { isQuotaflowError } from '../../src/errors.ts';
import { waitFor } from '../support/wait.ts';
import {
  aggregatorEnv,
  asRecord,
  differences,
  groundTruth,
  policyFromText,
  produceUsage,
  readUntil,
  storedCounts,
  usage,
  type AggregatorTestEnv,
} from '../support/aggregator.ts';
import { resolve, tenantKey, type CompiledPolicy } from '../../src/policy/index.ts';

configureLogging({ level: 'warn' });

const TALKPILOT_LIKE = (limits: string) => `
version: "test"
product: TalkPilot (scaled)
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: json_error, error_code: RATE_LIMITED, message: "Rate limit exceeded. Try again in {retry_after} seconds.", headers: [retry-after, x-ratelimit] }
rules:
  - id: per-key
    default: true
    scope: api_key
    limits: ${limits}
`;

async function startAggregator(env: AggregatorTestEnv, policy: CompiledPolicy, redisUrl = services().redisUrl) {
  const store = await openUsageStore(redisUrl, { keyPrefix: env.keyPrefix });
  const aggregator = new Aggregator({
    kafka: env.kafka,
    store,
    policy,
    topics: env.topics,
    groupId: env.groupId,
    region: 'test',
    sessionTimeoutMs: 10_000,
    tickMs: 50,
    retryMinMs: 50,
    retryMaxMs: 500,
  });
  let crashes = 0;
  aggregator.on('crash', () => crashes++);
  env.defer(async () => {
    await aggregator.stop();
    await store.close();
  });
  await aggregator.start();
  return { aggregator, store, crashes: () => crashes };
}

/** Resolves once `n` events are in Redis and their offsets committed (not merely decoded). */
function consumed(aggregator: Aggregator, n: number, timeoutMs: number) {
  const d = deferred(`${n} events committed`, timeoutMs);
  const check = () => aggregator.stats.committed >= n && d.resolve();
  aggregator.on('batch', check);
  check();
  return d.promise.finally(() => aggregator.off('batch', check));
}

describe('aggregator: counts in Redis equal the events produced, exactly', () => {
  test('200,000 events over 5,000 tenants and 6 partitions', { timeout: 300_000 }, async (t) => {
    const env = await aggregatorEnv(t, 6);
    const { policy } = await policyFromText(TALKPILOT_LIKE('[{ limit: 60, window: 60s }, { limit: 1000, window: 1h }]'));
    const now = Date.now();
    const events: UsageEvent[] = [];
    for (let i = 0; i < 200_000; i++) {
      events.push(usage(`k${(i * 7919) % 5_000}`, now - 30_000 + (i % 30_000), { cost: 1 + (i % 3) }));
    }
    await produceUsage(env.kafka, env.topics.usage, events.map(asRecord), 5_000);
    const { aggregator } = await startAggregator(env, policy);
    const started = Date.now();
    const progress = setInterval(() => t.diagnostic(`${((Date.now() - started) / 1000).toFixed(0)} s: ${JSON.stringify(aggregator.stats)}`), 10_000);
    await consumed(aggregator, events.length, 240_000).finally(() => clearInterval(progress));
    const ms = Date.now() - started;
    t.diagnostic(
      `aggregated 200,000 events in ${ms} ms (${Math.round(200_000 / (ms / 1000))} events/s), ${aggregator.stats.storeRoundTrips} store round trips, ${aggregator.stats.batches} batches`,
    );

    const keys = new StoreKeys(env.keyPrefix);
    const redis = testRedis(t);
    const truth = groundTruth(policy, events, bucketField);
    assert.equal(truth.size, 5_000);
    const stored = await storedCounts(redis, (k) => keys.counter(k), [...truth.keys()]);
    assert.deepEqual(differences(truth, stored), []);
    assert.equal(aggregator.stats.counted, 200_000);
    assert.equal(aggregator.stats.dlq, 0);
    assert.ok(aggregator.stats.storeRoundTrips <= aggregator.stats.batches * 2, 'at most a load and an apply per batch');
  });
});

describe('aggregator: decisions and breach records', () => {
  test('a crossing gives exactly one block with the right until, an unblock when the window rolls, and a breach record with the overshoot', {
    timeout: 120_000,
  }, async (t) => {
    const env = await aggregatorEnv(t, 3);
    const { policy } = await policyFromText(TALKPILOT_LIKE('[{ limit: 10, window: 2s, resolution: 100ms }]'));
    const { aggregator } = await startAggregator(env, policy);
    const now = Date.now();
    // 13 admitted requests in one bucket: the 10th reaches the limit, 11–13 were admitted over it.
    const crossing = Array.from({ length: 13 }, (_, i) => usage('crosser', now, { requestId: `r${i}` }));
    // Two refused by a gateway that had the block, and a quiet key that never crosses.
    const refused = [0, 1].map(() => usage('crosser', now, { outcome: { kind: 'refused', decision: { counterKey: 'x', windowMs: 2_000, decidedAt: now } } }));
    const quiet = Array.from({ length: 5 }, () => usage('quiet', now));
    // The first block (a near snapshot may come first if the 13 events span two batches).
    const blockSeen = new Promise<Decision>((ok) => aggregator.on('decision', (d: Decision) => d.state === 'block' && ok(d)));
    await produceUsage(env.kafka, env.topics.usage, [...crossing, ...refused, ...quiet].map(asRecord));

    const firstDecision = await blockSeen;
    assert.equal(firstDecision.state, 'block');
    const until = Math.floor(now / 100) * 100 + 2_000; // when the crossing bucket leaves the 2 s window
    assert.equal(firstDecision.until, until);

    const decisions = (
      await readUntil(env.kafka, env.topics.decisions, (rs) => rs.some((r) => JSON.parse(r.value!.toString()).state === 'unblock'), 30_000, 'an unblock')
    ).map((r) => JSON.parse(r.value!.toString()) as Decision);
    const mine = decisions.filter((d) => d.counterKey === firstDecision.counterKey && d.state !== 'near');
    assert.deepEqual(
      mine.map((d) => d.state),
      ['block', 'unblock'],
      'exactly one block, then the unblock',
    );
    assert.equal(mine[0]!.limit, 10);
    assert.equal(mine[0]!.observed, 10);
    assert.equal(mine[0]!.message, `Rate limit exceeded. Try again in ${Math.ceil((until - now) / 1000)} seconds.`);
    assert.equal(mine[1]!.decidedAt, until, 'the unblock is dated when the window rolled');
    assert.ok(
      decisions.every((d) => d.counterKey === firstDecision.counterKey),
      'the quiet key got no decision',
    );

    const records = (
      await readUntil(env.kafka, env.topics.audit, (rs) => rs.some((r) => JSON.parse(r.value!.toString()).liftedAt !== null), 30_000, 'a closed breach')
    ).map((r) => JSON.parse(r.value!.toString()) as BreachRecord);
    const closed = records.find((r) => r.liftedAt !== null)!;
    assert.equal(closed.firstCrossedAt, now);
    assert.equal(closed.countAtCrossing, 10);
    assert.equal(closed.peakCount, 13);
    assert.equal(closed.overshoot, 3);
    assert.equal(closed.refused, 2);
    assert.equal(closed.liftedAt, until);

    // The lapse timer's changes reach Redis without waiting for another event of the tenant, so a new
    // owner after a rebalance does not repeat the unblock or the breach record.
    const redis = testRedis(t);
    const hash = new StoreKeys(env.keyPrefix).counter(firstDecision.counterKey);
    let meta: string[] = [];
    await waitFor(
      'the lapse to reach the stored counter',
      async () => (meta = Object.keys(await redis.hgetall(hash)).filter((f) => f.startsWith('_'))).length === 0,
      { timeoutMs: 10_000, everyMs: 100 },
    ).catch(() => {});
    assert.deepEqual(meta, [], 'no block or open breach left in the stored counter');
  });
});

describe('aggregator: runtime overrides (quota.overrides)', () => {
  test("raising a blocked key's limit lifts the block at once, without a restart; removing the override blocks it again", { timeout: 120_000 }, async (t) => {
    const env = await aggregatorEnv(t, 2);
    const { policy } = await policyFromText(TALKPILOT_LIKE('[{ limit: 5, window: 60s }]'));
    const { aggregator } = await startAggregator(env, policy);
    const now = Date.now();
    const decisions: Decision[] = [];
    aggregator.on('decision', (d: Decision) => decisions.push(d));
    const nextDecision = (state: 'block' | 'unblock') => {
      const d = deferred(`a ${state} decision`, 30_000);
      const check = () => decisions.some((x, i) => i >= seen && x.state === state) && d.resolve();
      const seen = decisions.length;
      aggregator.on('decision', check);
      return d.promise.finally(() => aggregator.off('decision', check));
    };

    const blocked = nextDecision('block');
    await produceUsage(
      env.kafka,
      env.topics.usage,
      Array.from({ length: 6 }, () => asRecord(usage('vip', now))),
    );
    await blocked;

    const scopeKey = resolve(policy, { subjects: { api_key: 'vip' } });
    assert.equal(scopeKey.kind, 'resolved');
    const key = scopeKey.kind === 'resolved' ? scopeKey.scopeKey : '';
    const producer = env.kafka.producer();
    await producer.connect();
    env.defer(() => producer.disconnect());
    const unblocked = nextDecision('unblock');
    await producer.send([
      {
        topic: env.topics.overrides,
        key,
        value: JSON.stringify({
          schemaVersion: 1,
          key,
          rule: 'per-key',
          subjects: { api_key: 'vip' },
          setAt: now,
          reason: 'support ticket 42',
          limits: [{ limit: 100, window: '60s' }],
        }),
      },
    ]);
    await unblocked;

    // Under the new limit, ten more requests pass without a decision.
    const committedBefore = aggregator.stats.committed;
    const more = deferred('10 more events committed', 30_000);
    aggregator.on('batch', () => aggregator.stats.committed >= committedBefore + 10 && more.resolve());
    await produceUsage(
      env.kafka,
      env.topics.usage,
      Array.from({ length: 10 }, () => asRecord(usage('vip', now + 1))),
    );
    await more.promise;
    assert.deepEqual(
      decisions.map((d) => d.state),
      ['block', 'unblock'],
    );

    // Removing the override (a tombstone) brings back the limit of 5, which 16 requests exceed.
    const reblocked = nextDecision('block');
    await producer.send([{ topic: env.topics.overrides, key, value: null }]);
    await reblocked;
    assert.deepEqual(
      decisions.map((d) => d.state),
      ['block', 'unblock', 'block'],
    );
    assert.equal(decisions[2]!.limit, 5);
  });
});

describe('aggregator: bad input never stops the stream and is never lost', () => {
  test('1,200 malformed records among 3,000 good ones: each bad one is in the DLQ with its reason and bytes, every good one is counted', {
    timeout: 180_000,
  }, async (t) => {
    const env = await aggregatorEnv(t, 6);
    const { policy } = await policyFromText(TALKPILOT_LIKE('[{ limit: 60, window: 60s }, { limit: 1000, window: 1h }]'));
    const now = Date.now();
    const records = corpus({ seed: 42, good: 3_000, bad: 1_200, tenants: Array.from({ length: 50 }, (_, i) => `tenant-${i}`), now });
    const bad = records.filter((r) => r.expect !== 'good');
    assert.ok(bad.length >= 1_000);
    await produceUsage(
      env.kafka,
      env.topics.usage,
      records.map((r) => ({ key: r.key, value: r.value })),
      500,
    );
    const { aggregator, crashes } = await startAggregator(env, policy);
    await consumed(aggregator, records.length, 120_000);

    const dlq = await readUntil(env.kafka, env.topics.usageDlq, (rs) => rs.length >= bad.length, 60_000, `${bad.length} DLQ records`);
    assert.equal(dlq.length, bad.length);
    // Partition offsets say nothing about the corpus order: match each DLQ record by reason and bytes
    // (a null and an empty value are alike to Kafka clients).
    const sig = (reason: string, value: Buffer | null) => `${reason}|${value?.toString('base64') ?? ''}`;
    const remaining = new Map<string, number>();
    for (const r of bad) remaining.set(sig(r.expect, r.value), (remaining.get(sig(r.expect, r.value)) ?? 0) + 1);
    for (const m of dlq) {
      const h = readDlqHeaders(m.headers);
      assert.ok(h, 'DLQ headers present');
      assert.equal(h.sourceTopic, env.topics.usage);
      const k = sig(h.reason, m.value);
      assert.ok((remaining.get(k) ?? 0) > 0, `unexpected DLQ record: reason ${h.reason}, detail ${h.detail}`);
      remaining.set(k, remaining.get(k)! - 1);
    }
    assert.equal(
      [...remaining.values()].reduce((a, b) => a + b, 0),
      0,
      'every bad record reached the DLQ with its reason',
    );

    const good = records
      .filter((r) => r.expect === 'good')
      .map((r) => {
        const d = decodeUsageEvent(r.value, corpusDecodeOptions(now));
        assert.ok(d.ok);
        return d.event;
      });
    const keys = new StoreKeys(env.keyPrefix);
    const truth = groundTruth(policy, good, bucketField);
    const stored = await storedCounts(testRedis(t), (k) => keys.counter(k), [...truth.keys()]);
    assert.deepEqual(differences(truth, stored), []);
    assert.equal(crashes(), 0, 'the aggregator never restarted');
    assert.equal(aggregator.stats.dlq, bad.length);
  });
});

describe('aggregator: usage batch records', () => {
  test('batches of good and bad events: each bad event is in the DLQ alone with its reason and index, every good one is counted once', {
    timeout: 180_000,
  }, async (t) => {
    const env = await aggregatorEnv(t, 6);
    const { policy } = await policyFromText(TALKPILOT_LIKE('[{ limit: 60, window: 60s }, { limit: 1000, window: 1h }]'));
    const now = Date.now();
    const rng = prng(7);
    const tenants = Array.from({ length: 40 }, (_, i) => `bt-${i}`);
    const header = { region: 'eu', gatewayId: 'gw-batch', policyVersion: '1' };
    // What makes an event of a batch bad, and the reason the DLQ must give.
    const badKinds: Array<[DlqReason, (e: Record<string, unknown>) => Record<string, unknown>]> = [
      ['schema', (e) => ({ ...e, cost: 0 })],
      ['absurd-cost', (e) => ({ ...e, cost: 5_000_000 })],
      ['future', (e) => ({ ...e, eventTime: now + 3_600_000 })],
      ['schema', (e) => ({ ...e, gatewayId: 'sneaky' })],
      ['schema', (e) => ({ ...e, extra: true })],
      ['unresolved', (e) => ({ ...e, subjects: { user: 'no-api-key' } })],
    ];
    const good: UsageEvent[] = [];
    const bad: Array<{ reason: DlqReason; event: Record<string, unknown>; index: number }> = [];
    const records: Array<{ key: null; value: string; partition: number }> = [];
    for (let b = 0; b < 60; b++) {
      // One batch per partition's tenants, as a gateway packs them.
      const partition = b % 6;
      const mine = tenants.filter((x) => javaPartition(tenantKey({ subject: 'api_key', value: x }), 6) === partition);
      const items: Record<string, unknown>[] = [];
      for (let i = 0; i < 50; i++) {
        const { schemaVersion, region, gatewayId, policyVersion, ...e } = goodEvent(rng, mine[i % mine.length]!, now);
        const kind = rng() < 0.1 ? badKinds[Math.floor(rng() * badKinds.length)]! : undefined;
        if (kind) {
          const item = kind[1](e);
          items.push(item);
          // The DLQ holds the event with the batch's fields; a field the event set itself keeps its value.
          bad.push({ reason: kind[0], index: items.length - 1, event: { schemaVersion: 1, ...header, ...item } });
        } else {
          items.push(e);
          good.push({ schemaVersion: 1, ...header, ...e } as UsageEvent);
        }
      }
      records.push({ key: null, partition, value: JSON.stringify({ kind: 'usage-batch', schemaVersion: 1, ...header, events: items }) });
    }
    assert.ok(bad.length > 100 && new Set(bad.map((x) => x.reason)).size === 4, `${bad.length} bad events`);
    await produceUsage(env.kafka, env.topics.usage, records, 20);
    const { aggregator, crashes } = await startAggregator(env, policy);
    await consumed(aggregator, good.length + bad.length, 120_000);

    const dlq = await readUntil(env.kafka, env.topics.usageDlq, (rs) => rs.length >= bad.length, 60_000, `${bad.length} DLQ records`);
    assert.equal(dlq.length, bad.length);
    const sorted = (v: unknown): unknown =>
      v === null || typeof v !== 'object'
        ? v
        : Object.fromEntries(
            Object.entries(v)
              .sort(([a], [b]) => (a < b ? -1 : 1))
              .map(([k, x]) => [k, sorted(x)]),
          );
    const sig = (reason: string, index: number, event: unknown) => `${reason}|${index}|${JSON.stringify(sorted(event))}`;
    const seen = dlq.map((m) => {
      const h = readDlqHeaders(m.headers);
      assert.ok(h && h.sourceBatchIndex !== undefined, 'DLQ headers, with the index in the batch');
      return sig(h.reason, h.sourceBatchIndex, JSON.parse(m.value!.toString()));
    });
    assert.deepEqual(seen.sort(), bad.map((x) => sig(x.reason, x.index, x.event)).sort(), 'each bad event in the DLQ once, with its reason and index');

    const keys = new StoreKeys(env.keyPrefix);
    const truth = groundTruth(policy, good, bucketField);
    const stored = await storedCounts(testRedis(t), (k) => keys.counter(k), [...truth.keys()]);
    assert.deepEqual(differences(truth, stored), []);
    assert.equal(crashes(), 0, 'the aggregator never restarted');
    assert.equal(aggregator.stats.dlq, bad.length);
    assert.equal(aggregator.stats.records, records.length);
  });
});

describe('aggregator: Redis down', () => {
  test('the partition pauses, retries with backoff and commits nothing; when Redis answers again the counts are exact', { timeout: 180_000 }, async (t) => {
    const redisServer = await startLocalRedis({ programs: programsFrom(process.env) });
    t.after(() => redisServer.stop());
    const env = await aggregatorEnv(t, 2);
    const { policy } = await policyFromText(TALKPILOT_LIKE('[{ limit: 1000000, window: 60s }]'));
    const { aggregator } = await startAggregator(env, policy, redisServer.url);
    const now = Date.now();
    const first = Array.from({ length: 2_000 }, (_, i) => usage(`k${i % 40}`, now - 1_000 + (i % 1_000)));
    await produceUsage(env.kafka, env.topics.usage, first.map(asRecord));
    await consumed(aggregator, first.length, 60_000);

    const admin = env.kafka.admin();
    await admin.connect();
    t.after(() => admin.disconnect());
    const committed = async () => (await admin.committedOffsets(env.groupId, env.topics.usage)).reduce((s, p) => s + p.offset, 0);
    const before = await committed();
    assert.equal(before, first.length, 'everything so far is committed');

    // Freeze redis-server: connections stay open but nothing answers (the nastiest kind of down).
    process.kill(redisServer.process.pid, 'SIGSTOP');
    let resumed = false;
    t.after(() => {
      if (!resumed) process.kill(redisServer.process.pid, 'SIGCONT');
    });
    const failures = deferred('store failures while Redis is frozen', 60_000);
    let failed = 0;
    aggregator.on('store-failure', () => ++failed >= 3 && failures.resolve());
    const second = Array.from({ length: 1_000 }, (_, i) => usage(`k${i % 40}`, now + (i % 500)));
    await produceUsage(env.kafka, env.topics.usage, second.map(asRecord));
    await failures.promise;
    assert.equal(await committed(), before, 'nothing committed while Redis is down');

    process.kill(redisServer.process.pid, 'SIGCONT');
    resumed = true;
    const all = [...first, ...second];
    await waitFor('all offsets committed after Redis returned', async () => (await committed()) === all.length, { timeoutMs: 60_000, everyMs: 200 });

    const redis = new Redis(redisServer.url);
    t.after(() => redis.disconnect());
    const keys = new StoreKeys(env.keyPrefix);
    const truth = groundTruth(policy, all, bucketField);
    assert.deepEqual(differences(truth, await storedCounts(redis, (k) => keys.counter(k), [...truth.keys()])), []);
  });
});

describe('aggregator command: a cluster without the topics', () => {
  test('refuses at start, naming the missing topics and how to create them, and opens nothing', { timeout: 60_000 }, async () => {
    const prefix = `${uniqueName('absent')}.`;
    const { brokers, redisUrl } = services();
    const io = { out: () => {}, err: () => {}, env: {}, signal: new AbortController().signal };
    const argv = ['--policy', 'policies/talkpilot.yaml', '--brokers', brokers.join(','), '--redis', redisUrl, '--topic-prefix', prefix, '--stats-every', '0'];
    await assert.rejects(aggregatorCommand.run(argv, io), (e: unknown) => {
      assert.ok(isQuotaflowError(e), String(e));
      assert.equal(e.code, 'PRECONDITION_FAILED');
      assert.match(e.message, new RegExp(`no topic ${prefix.replaceAll('.', '\\.')}quota\\.usage`));
      assert.match(e.hint ?? '', /quotaflow topics create/);
      return true;
    });
  });
});
