import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { PROJECT_ROOT } from '../../src/stack/paths.ts';
import { StoreKeys, bucketField } from '../../src/store/index.ts';
import type { UsageEvent } from '../../src/events/index.ts';
import { services, testRedis } from '../support/integration.ts';
import { waitFor } from '../support/wait.ts';
import { aggregatorEnv, asRecord, differences, groundTruth, policyFromText, storedCounts, usage } from '../support/aggregator.ts';

/** A seeded PRNG, so a failing schedule can be replayed (the seed is printed). */
function prng(seed: number) {
  return () => (seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648) / 2_147_483_648;
}

test('aggregators SIGKILLed at random moments (5 times) while a second and third join and leave: still exact', { timeout: 420_000 }, async (t) => {
  const seed = Number(process.env.QUOTAFLOW_CHAOS_SEED ?? Date.now() % 100_000);
  t.diagnostic(`chaos seed ${seed} (QUOTAFLOW_CHAOS_SEED=${seed} replays this schedule)`);
  const random = prng(seed);
  const env = await aggregatorEnv(t, 6);
  const { policy, file } = await policyFromText(`
version: "chaos"
product: TalkPilot (scaled)
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 60, window: 60s }, { limit: 1000, window: 1h }] }
`);

  const members = new Set<ChildProcess>();
  const start = (name: string) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(PROJECT_ROOT, 'src/cli/main.ts'),
        'aggregator',
        '--policy',
        file,
        '--brokers',
        services().brokers.join(','),
        '--redis',
        services().redisUrl,
        '--group',
        env.groupId,
        '--topic-prefix',
        env.topicPrefix,
        '--key-prefix',
        env.keyPrefix,
        '--session-timeout',
        '6000',
        '--stats-every',
        '0',
      ],
      {
        cwd: PROJECT_ROOT,
        // Debug logs say when a batch is in Redis but not yet committed; the pause holds that window open.
        env: { ...process.env, QUOTAFLOW_LOG: 'debug', QUOTAFLOW_LOG_FORMAT: 'json', QUOTAFLOW_FAULT_PAUSE_BEFORE_COMMIT_MS: '300' },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    createInterface({ input: child.stderr! }).on('line', (line) => {
      if (line.includes('batch applied to the store; committing offsets')) child.emit('applied');
      else if (/"level":"(error|warn)"/.test(line)) process.stderr.write(`${name}: ${line}\n`);
    });
    members.add(child);
    child.once('exit', () => members.delete(child));
    t.diagnostic(`${name} started (pid ${child.pid})`);
    return child;
  };
  const stopGracefully = async (child: ChildProcess) => {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  t.after(() => {
    for (const m of members) m.kill('SIGKILL');
  });

  // At least 200,000 events, produced at ~8 per ms while the members come and go, and for as long as
  // the kills go on: a kill waits for a batch to be applied, and a drained stream would have none.
  const now = Date.now();
  const event = (i: number) => usage(`k${(i * 7919) % 5_000}`, now + Math.floor(i / 8));
  const events: UsageEvent[] = Array.from({ length: 200_000 }, (_, i) => event(i));
  let killing = true;
  const producer = env.kafka.producer({ idempotent: true, retries: Number.MAX_SAFE_INTEGER, maxRetryMs: 5_000 });
  await producer.connect();
  const producing = (async () => {
    for (let i = 0; i < events.length || killing; i += 2_000) {
      while (events.length < i + 2_000) events.push(event(events.length));
      await producer.send(events.slice(i, i + 2_000).map((e) => ({ topic: env.topics.usage, ...asRecord(e) })));
      await new Promise((r) => setTimeout(r, 250));
    }
  })();

  let a = start('aggregator A');
  let b: ChildProcess | undefined;
  let c: ChildProcess | undefined;
  for (let kill = 1; kill <= 5; kill++) {
    await new Promise((r) => setTimeout(r, 1_000 + random() * 3_000));
    // Kill at the worst moment: the batch is counted in Redis and its offsets are not committed, so
    // Kafka redelivers events Redis already holds. Only the offset fences keep them from counting twice.
    await new Promise((r) => a.once('applied', r));
    const exited = new Promise((r) => a.once('exit', r));
    a.kill('SIGKILL');
    await exited;
    t.diagnostic(`SIGKILL ${kill} of aggregator A, between its Redis write and its offset commit`);
    a = start(`aggregator A (restart ${kill})`);
    if (kill === 2) b = start('aggregator B (joins)');
    if (kill === 3) c = start('aggregator C (joins)');
    if (kill === 4 && b) {
      await stopGracefully(b);
      t.diagnostic('aggregator B left');
    }
  }
  killing = false;
  await producing;
  t.diagnostic(`${events.length.toLocaleString('en-US')} events produced`);
  await producer.disconnect();
  if (c) {
    await stopGracefully(c);
    t.diagnostic('aggregator C left');
  }

  // Wait, on Kafka's word, until the group has committed every offset.
  const admin = env.kafka.admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  await waitFor(
    `the group to commit all ${events.length} offsets`,
    async () => (await admin.committedOffsets(env.groupId, env.topics.usage)).reduce((s, p) => s + Math.max(0, p.offset), 0) === events.length,
    { timeoutMs: 240_000, everyMs: 500 },
  );
  await stopGracefully(a);

  const keys = new StoreKeys(env.keyPrefix);
  const truth = groundTruth(policy, events, bucketField);
  const stored = await storedCounts(testRedis(t), (k) => keys.counter(k), [...truth.keys()]);
  assert.deepEqual(differences(truth, stored), [], 'no event counted twice or lost');
});
