/**
 * `quotaflow demo` (npm start) run as a user runs it: a child process against the services of the
 * test run, with its own topic prefix, consumer group and Redis key prefix. It must drive traffic
 * through the sidecar and the aggregator for its --duration, stop by itself with exit code 0, and
 * report (--json) the over-limit key refused and blocked, the others never refused, and every request
 * consumed by the aggregator exactly once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../src/stack/paths.ts';
import { topicNames } from '../../src/kafka/topics.ts';
import { services, testKafka, testRedis, uniqueName } from '../support/integration.ts';

const DURATION_S = 25;
/** Start-up, the run, the wait for the aggregator to catch up, and the consumers leaving their groups. */
const EXIT_WITHIN_MS = 55_000;

interface Summary {
  stoppedBy: string;
  group: string;
  tenants: Array<{ key: string; overLimit: boolean; sent: number; admitted: number; refused: number; failed: number; limitsHit: string[]; blocks: number }>;
  requests: { sent: number; admitted: number; refused: number; failed: number };
  events: { produced: number; dropped: number; consumed: number; fromBeforeRun: number; lagAtEnd: number | null };
  blocks: { published: number };
  refusalsByRule: Record<string, Record<string, number>>;
  overshoot: number;
  breaches: number;
}

function runDemo(args: string[]): Promise<{ code: number | null; ms: number; stdout: string; stderr: string }> {
  const { brokers, redisUrl } = services();
  const env = { ...process.env, KAFKA_BROKERS: brokers.join(','), REDIS_URL: redisUrl, QUOTAFLOW_LOG: 'warn' };
  const started = Date.now();
  const child = spawn(process.execPath, ['--import', 'tsx', join(PROJECT_ROOT, 'src/cli/main.ts'), 'demo', ...args], {
    cwd: PROJECT_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d));
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const killer = setTimeout(() => child.kill('SIGKILL'), EXIT_WITHIN_MS + 20_000);
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(killer);
      resolve({ code, ms: Date.now() - started, stdout, stderr });
    }),
  );
}

test('`quotaflow demo --duration 25s` blocks the over-limit key, never refuses the others, counts every request once and exits 0', {
  timeout: EXIT_WITHIN_MS + 30_000,
}, async (t) => {
  const topicPrefix = `${uniqueName('demo')}.`;
  const keyPrefix = `${uniqueName('qf-demo')}:`;
  // Registered before testRedis's own hook (hooks run in order), so the client is still open here.
  t.after(async () => {
    const admin = testKafka(undefined).admin();
    await admin.connect();
    await admin.deleteGroups([`${topicPrefix}quotaflow-demo`]).catch(() => {});
    await admin.deleteTopics(Object.values(topicNames(topicPrefix))).catch(() => {});
    await admin.disconnect();
    const keys = await redis.keys(`${keyPrefix}*`);
    if (keys.length) await redis.del(...keys);
  });
  const redis = testRedis(t);

  const run = await runDemo(['--duration', `${DURATION_S}s`, '--json', '--topic-prefix', topicPrefix, '--key-prefix', keyPrefix]);
  const context = `exit ${run.code} after ${run.ms} ms; stderr ends:\n${run.stderr.slice(-3_000)}`;
  assert.equal(run.code, 0, context);
  assert.ok(run.ms < EXIT_WITHIN_MS, `the demo stops by itself in bounded time (${context})`);

  const s = JSON.parse(run.stdout) as Summary;
  assert.equal(s.stoppedBy, 'duration');
  assert.equal(s.group, `${topicPrefix}quotaflow-demo`);

  const over = s.tenants.filter((x) => x.overLimit);
  assert.equal(over.length, 1, 'one key goes over its limit');
  const runaway = over[0]!;
  assert.ok(runaway.refused >= 1, `the over-limit key was refused (${JSON.stringify(runaway)})`);
  assert.ok(runaway.blocks >= 1 && runaway.limitsHit.includes('60/60s'), `the aggregator blocked it on its per-minute limit (${JSON.stringify(runaway)})`);
  assert.ok(s.blocks.published >= runaway.blocks);
  assert.ok(s.breaches >= 1, 'the block left a breach record');
  assert.ok(Number.isInteger(s.overshoot) && s.overshoot >= 0);
  const byRule = Object.values(s.refusalsByRule)
    .flatMap((m) => Object.values(m))
    .reduce((a, b) => a + b, 0);
  assert.equal(byRule, s.requests.refused, `the sidecar's refusals by rule add up to the 429s the clients got: ${JSON.stringify(s.refusalsByRule)}`);

  const under = s.tenants.filter((x) => !x.overLimit);
  assert.ok(under.length >= 3);
  for (const x of under) {
    assert.equal(x.refused, 0, `${x.key} stays under its limits and is never refused`);
    assert.equal(x.failed, 0, `${x.key}: every request answered`);
    assert.ok(x.sent >= 1, `${x.key} sent traffic`);
  }

  // Every answered request is in a usage event (identical ones share one, with a count), and the aggregator consumed each exactly once.
  const answered = s.requests.admitted + s.requests.refused;
  assert.equal(s.requests.failed, 0);
  assert.equal(answered, s.requests.sent);
  assert.ok(answered > 0);
  assert.equal(s.events.fromBeforeRun, 0, 'a fresh topic has no backlog');
  assert.equal(s.events.dropped, 0);
  assert.equal(s.events.produced, answered);
  assert.equal(s.events.lagAtEnd, 0, 'the aggregator caught up before the summary');
  assert.equal(s.events.consumed, answered);

  // The aggregator's counters really are in Redis, under the run's key prefix.
  assert.ok((await redis.keys(`${keyPrefix}*`)).length > 0, 'counters written to Redis');
});
