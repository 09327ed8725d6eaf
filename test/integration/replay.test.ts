/**
 * `quotaflow replay` against a real broker and a real Redis:
 *  - --rebuild after FLUSHDB restores, key by key, the counts, fences, blocks and open breaches the
 *    aggregator had; a restarted aggregator carries on from them and gateways see the same blocks;
 *  - --dry-run with the limit halved reports exactly the extra blocks a brute-force count predicts,
 *    and with the live policy reports no difference from what the aggregator decided.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Redis as RedisClient } from 'ioredis';
import { Redis } from 'ioredis';
import { replayCommand } from '../../src/cli/replay.ts';
import { EXIT, type CommandIO } from '../../src/cli/command.ts';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { Gateway } from '../../src/gateway/gateway.ts';
import { openUsageStore } from '../../src/store/index.ts';
import { configureLogging } from '../../src/log.ts';
import { isQuotaflowError } from '../../src/errors.ts';
import type { Decision } from '../../src/events/index.ts';
import type { ComparedBlock } from '../../src/replay/index.ts';
import { services } from '../support/integration.ts';
import { aggregatorEnv, asRecord, policyFromText, produceUsage, usage, type AggregatorTestEnv } from '../support/aggregator.ts';

configureLogging({ level: 'warn' });

const policyText = (hourly: number) => `
version: "replay-${hourly}"
product: replay test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - id: per-key
    default: true
    scope: api_key
    limits: [{ limit: ${hourly}, window: 1h }, { limit: 10, window: 2s, resolution: 1s }]
`;

const counterKey = (apiKey: string) => `{api_key=${apiKey}}:rule=per-key:api_key=${apiKey}`;

async function replay(env: AggregatorTestEnv, ...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CommandIO = {
    out: (t) => (out += t + '\n'),
    err: (t) => (err += t + '\n'),
    env: { KAFKA_BROKERS: services().brokers.join(',') },
    signal: new AbortController().signal,
  };
  const code = await replayCommand.run([...argv, '--topic-prefix', env.topicPrefix, '--key-prefix', env.keyPrefix, '--group', env.groupId], io);
  return { code, out, err };
}

async function until(what: string, ok: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await ok())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function usageRecords(env: AggregatorTestEnv): Promise<number> {
  const admin = env.kafka.admin();
  await admin.connect();
  try {
    return (await admin.offsets(env.topics.usage)).reduce((n, p) => n + p.high, 0);
  } finally {
    await admin.disconnect();
  }
}

/** A Redis database of this test's own, so FLUSHDB touches nobody else's keys. */
function ownDatabase(url: string, db: number): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/**
 * Everything under the key prefix, comparable: fence hashes as stored; counter hashes with their meta
 * fields as stored and only the buckets the windows count at `now` (the aggregator prunes older ones
 * lazily, a rebuild never writes them).
 */
async function snapshot(redis: RedisClient, prefix: string, now: number): Promise<Map<string, Record<string, string>>> {
  const keys = (await redis.keys(`${prefix}*`)).sort();
  const out = new Map<string, Record<string, string>>();
  for (const key of keys) {
    const hash = await redis.hgetall(key);
    const kept: Record<string, string> = {};
    for (const [field, value] of Object.entries(hash).sort(([a], [b]) => a.localeCompare(b))) {
      const bucket = /^b(\d+):(-?\d+)$/.exec(field);
      if (bucket) {
        const bucketMs = Number(bucket[1]);
        const windowMs = bucketMs === 60_000 ? 3_600_000 : 2_000; // the two limits of policyText
        if (Number(bucket[2]) <= Math.floor(now / bucketMs) - windowMs / bucketMs) continue;
      }
      kept[field] = value;
    }
    out.set(key, kept);
  }
  return out;
}

test('replay --rebuild after FLUSHDB restores every counter, fence and block exactly; aggregators and gateways carry on', { timeout: 150_000 }, async (t) => {
  const env = await aggregatorEnv(t, 3);
  const { policy, file } = await policyFromText(policyText(20));
  const redisUrl = ownDatabase(services().redisUrl, 7);
  const redis = new Redis(redisUrl);
  t.after(() => redis.quit());
  const startAggregator = async () => {
    const store = await openUsageStore(redisUrl, { keyPrefix: env.keyPrefix });
    const aggregator = new Aggregator({
      kafka: env.kafka,
      store,
      policy,
      topics: env.topics,
      groupId: env.groupId,
      region: 'test',
      tickMs: 50,
      sessionTimeoutMs: 10_000,
    });
    env.defer(async () => {
      await aggregator.stop();
      await store.close();
    });
    await aggregator.start();
    return aggregator;
  };
  let aggregator = await startAggregator();
  const a = new Gateway({ policy, kafka: env.gatewayKafka, topicPrefix: env.topicPrefix, gatewayId: 'a' });
  env.defer(() => a.stop());
  a.start();
  await a.whenWarm();

  // Tenants at different distances from their limits, in rounds of at most 10 (the 2 s limit) a key.
  // A gateway refuses what its own count already fills, so keys over the hourly limit also send
  // refused events (counted on their breaches).
  const sends: Record<string, number> = { k3: 3, k8: 8, k14: 14, k19: 19, k24: 24, k30: 30 };
  const unblocks: Decision[] = [];
  aggregator.on('decision', (d: Decision) => d.state === 'unblock' && unblocks.push(d));
  for (let round = 0; round < 3; round++) {
    if (round) await new Promise((r) => setTimeout(r, 2_200));
    for (const [key, n] of Object.entries(sends)) {
      for (let i = 10 * round; i < Math.min(n, 10 * round + 10); i++) a.check({ method: 'GET', path: '/x', headers: { 'x-api-key': key } });
    }
  }
  // Last of all, a key that reaches its 2 s limit: no later event lapses that block, only the timer.
  for (let i = 0; i < 10; i++) a.check({ method: 'GET', path: '/x', headers: { 'x-api-key': 'last' } });
  await a.stop(); // flushes every usage event to Kafka
  const produced = await usageRecords(env);
  await until('the aggregator to commit every record', () => aggregator.stats.committedRecords === produced);
  // The 2 s blocks lapse: the store then holds lapsed blocks (written by the lapse timer) and live ones.
  await until('the lapse timer to write every lapsed 2 s block', async () => {
    if (!unblocks.some((d) => d.tenant === 'api_key=last')) return false;
    for (const key of await redis.keys(`${env.keyPrefix}c:*`)) {
      const dec = await redis.hget(key, '_dec');
      if (dec && (JSON.parse(dec) as { windowMs: number }).windowMs === 2_000) return false;
    }
    return true;
  });

  // While the aggregator runs, a rebuild is refused.
  await assert.rejects(replay(env, '--rebuild', '--policy', file, '--from', 'earliest', '--redis', redisUrl), (e: unknown) => {
    assert.ok(isQuotaflowError(e) && e.code === 'PRECONDITION_FAILED', String(e));
    assert.match(e.describe(), /1 aggregator\(s\) of group .* are running[\s\S]*→ stop them/);
    return true;
  });

  await aggregator.stop();
  const before = Date.now();
  const had = await snapshot(redis, env.keyPrefix, before);
  const blockedBefore = [...had].filter(([, h]) => h._dec !== undefined).map(([k]) => k);
  assert.equal(had.size, 14, 'a fence hash and a counter hash per tenant');
  assert.ok(blockedBefore.length >= 2, `k24 and k30 hold hourly blocks: ${blockedBefore.join(', ')}`);

  await redis.flushdb();
  assert.equal((await redis.keys(`${env.keyPrefix}*`)).length, 0);
  // Folded on worker threads (the second run below folds on the main thread).
  const rebuilt = await replay(env, '--rebuild', '--policy', file, '--from', 'earliest', '--redis', redisUrl, '--json', '--workers', '2');
  assert.equal(rebuilt.code, EXIT.OK, rebuilt.out + rebuilt.err);
  const report = JSON.parse(rebuilt.out);
  assert.equal(report.workers, 2);
  assert.equal(report.fold.records, produced);
  assert.equal(report.written.present.length, 0);

  const restored = await snapshot(redis, env.keyPrefix, before);
  assert.deepEqual([...restored.keys()], [...had.keys()], 'the same keys');
  for (const [key, fields] of had) assert.deepEqual(restored.get(key), fields, `key ${key} restored exactly`);

  // Running it again changes nothing and says so.
  const again = await replay(env, '--rebuild', '--policy', file, '--from', 'earliest', '--redis', redisUrl, '--json', '--workers', '0');
  assert.equal(again.code, EXIT.FAILURE);
  assert.match(again.err, /already in Redis and were left alone/);
  assert.deepEqual(await snapshot(redis, env.keyPrefix, before), had);

  // A restarted aggregator carries on from the rebuilt counts; a new gateway sees the same blocks.
  aggregator = await startAggregator();
  const decisions: Decision[] = [];
  aggregator.on('decision', (d: Decision) => decisions.push(d));
  const b = new Gateway({ policy, kafka: env.gatewayKafka, topicPrefix: env.topicPrefix, gatewayId: 'b' });
  env.defer(() => b.stop());
  b.start();
  await b.whenWarm();
  const hourlyBlocked = (g: Gateway) =>
    g.cache
      .live(Date.now())
      .filter((x) => x.window === '1h')
      .map((x) => x.counterKey)
      .sort();
  assert.deepEqual(hourlyBlocked(b), [counterKey('k24'), counterKey('k30')]);
  for (const key of Object.keys(sends)) b.check({ method: 'GET', path: '/x', headers: { 'x-api-key': key } });
  await b.stop();
  const total = await usageRecords(env);
  await until('the restarted aggregator to commit the new records', () => aggregator.stats.committedRecords === total - produced);
  assert.equal(aggregator.stats.conflicts, 0);
  // k19's twentieth request reaches the hourly limit only if its 19 were restored.
  const blocks = decisions.filter((d) => d.state === 'block' && d.window === '1h').map((d) => d.tenant);
  assert.deepEqual(blocks, ['api_key=k19']);
  assert.deepEqual(
    decisions.filter((d) => d.state === 'unblock' && d.window === '1h'),
    [],
    'no hourly block was lifted',
  );
});

test('replay --dry-run with the hourly limit halved reports the extra blocks a brute-force count predicts; with the live policy, none', {
  timeout: 120_000,
}, async (t) => {
  const env = await aggregatorEnv(t, 3);
  const live = await policyFromText(policyText(20));
  const halved = await policyFromText(policyText(10));
  const store = await openUsageStore(services().redisUrl, { keyPrefix: env.keyPrefix });
  const aggregator = new Aggregator({ kafka: env.kafka, store, policy: live.policy, topics: env.topics, groupId: env.groupId, region: 'test', tickMs: 50 });
  env.defer(async () => {
    await aggregator.stop();
    await store.close();
  });
  await aggregator.start();

  // Events spread over ten minutes of the past, 20 s apart per key: the 6 s limit never binds.
  const start = Date.now() - 12 * 60_000;
  const counts: Record<string, number> = { a5: 5, a9: 9, a10: 10, a12: 12, a19: 19, a20: 20, a27: 27 };
  const events = Object.entries(counts).flatMap(([key, n], k) => Array.from({ length: n }, (_, i) => usage(key, start + k * 997 + i * 20_000)));
  await produceUsage(env.kafka, env.topics.usage, events.map(asRecord));
  await until('the aggregator to commit every event', () => aggregator.stats.committed === events.length);

  // Brute force: the bucketed rolling count (1 min buckets, 60 of them) after each event of a key.
  const bucketMs = 60_000;
  const predict = (limit: number) => {
    const out = new Map<string, { from: number; until: number }>();
    for (const [key, n] of Object.entries(counts)) {
      const times = events.filter((e) => e.subjects.api_key === key).map((e) => e.eventTime);
      const count = (at: number) => times.filter((x) => Math.floor(x / bucketMs) > Math.floor(at / bucketMs) - 60 && x <= at).length;
      const crossing = times.find((x) => count(x) >= limit);
      if (crossing === undefined) continue;
      let k = Math.floor(crossing / bucketMs) + 1;
      while (times.filter((x) => Math.floor(x / bucketMs) > k - 60).length > limit - 1) k++;
      out.set(counterKey(key), { from: crossing, until: k * bucketMs });
      assert.ok(n >= limit);
    }
    return out;
  };
  const from = new Date(start - 1_000).toISOString();

  const same = await replay(env, '--dry-run', '--policy', live.file, '--from', from, '--json', '--all');
  assert.equal(same.code, EXIT.OK, same.err);
  const sameReport = JSON.parse(same.out) as { summary: Record<string, number>; blocks: ComparedBlock[] };
  const decidedHourly = predict(20);
  assert.deepEqual([...decidedHourly.keys()].sort(), [counterKey('a20'), counterKey('a27')]);
  assert.deepEqual(sameReport.summary, { new: 0, lifted: 0, changed: 0, same: 2, decided: 2, whatIf: 2 }, 'the replay decides what the aggregator decided');

  // On worker threads: the same answer as the main thread's (the table below).
  const whatIf = await replay(env, '--dry-run', '--policy', halved.file, '--from', from, '--json', '--workers', '3');
  assert.equal(whatIf.code, EXIT.OK, whatIf.err);
  const report = JSON.parse(whatIf.out) as { summary: Record<string, number>; blocks: ComparedBlock[]; workers: number };
  assert.equal(report.workers, 3);
  const expected = predict(10);
  const fresh = report.blocks.filter((b) => b.change === 'new');
  assert.deepEqual(
    fresh.map((b) => b.counterKey).sort(),
    [...expected.keys()].filter((k) => !decidedHourly.has(k)).sort(),
    'new blocks: the keys between 10 and 19',
  );
  for (const b of report.blocks) {
    const p = expected.get(b.counterKey)!;
    assert.ok(p, `${b.counterKey} is blocked in the brute force too`);
    assert.equal(b.whatIf!.from, p.from, `${b.counterKey} first crosses at the brute-force time`);
    assert.equal(b.whatIf!.until, p.until, `${b.counterKey} has room again at the brute-force time`);
    assert.equal(b.whatIf!.to, null, 'still blocked under a halved hourly limit');
  }
  const changed = report.blocks
    .filter((b) => b.change === 'changed')
    .map((b) => b.counterKey)
    .sort();
  assert.deepEqual(changed, [...decidedHourly.keys()].sort(), 'the decided blocks start earlier');
  assert.deepEqual(report.summary, { new: 3, lifted: 0, changed: 2, same: 0, decided: 2, whatIf: 5 });

  // The table a person reads.
  const text = await replay(env, '--dry-run', '--policy', halved.file, '--from', from);
  assert.match(text.out, /new\s+\{api_key=a10\}:rule=per-key:api_key=a10\s+1h\s+10\s+—\s+\S+ \S+ → open, room at/);
  assert.match(text.out, /changed\s+\{api_key=a27\}:rule=per-key:api_key=a27\s+1h\s+20 → 10/);
  assert.match(text.out, /2 block\(s\) decided, 5 under replay-10: 3 new, 0 lifted, 2 changed, 0 the same/);
  const oneThread = await replay(env, '--dry-run', '--policy', halved.file, '--from', from, '--workers', '0');
  assert.equal(oneThread.out.replace(/^Read .*\n/, ''), text.out.replace(/^Read .*\n/, ''), 'the main thread alone gives the same table');
  assert.doesNotMatch(oneThread.out, /worker thread/);
});

test('replay refuses a bad command line with the next step', async () => {
  const env = { topicPrefix: 'x.', keyPrefix: 'qf:', groupId: 'g' } as AggregatorTestEnv;
  const usageError = async (...argv: string[]) => {
    try {
      await replay(env, ...argv);
      return assert.fail('expected a usage error');
    } catch (e) {
      assert.ok(isQuotaflowError(e) && e.code === 'USAGE', String(e));
      return e.describe();
    }
  };
  assert.match(await usageError('--policy', 'p.yaml', '--from', '1h'), /--rebuild or --dry-run/);
  assert.match(await usageError('--dry-run', '--rebuild', '--policy', 'p.yaml', '--from', '1h'), /--rebuild or --dry-run/);
  assert.match(await usageError('--dry-run', '--from', '1h'), /--policy FILE is required/);
  assert.match(await usageError('--dry-run', '--policy', 'p.yaml'), /--from WHEN is required[\s\S]*→ e\.g\./);
  assert.match(await usageError('--dry-run', '--policy', 'p.yaml', '--from', 'yesterday-ish'), /not a time/);
  assert.match(await usageError('--dry-run', '--policy', 'p.yaml', '--from', '1h', '--to', '2h'), /--to is not after --from/);
  assert.match(await usageError('--dry-run', '--policy', 'p.yaml', '--from', '1h', '--workers', 'many'), /--workers takes a whole number from 0 to 256/);
});
