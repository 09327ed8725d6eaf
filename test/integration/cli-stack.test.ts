import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../src/stack/paths.ts';
import { redisPing } from '../../src/stack/redis-local.ts';
import { waitForCluster } from '../../src/kafka/client.ts';

test('`quotaflow stack up` keeps Kafka and Redis up until Ctrl-C, then stops them', { timeout: 120_000 }, async () => {
  const env: NodeJS.ProcessEnv = { ...process.env, QUOTAFLOW_STACK: 'local', QUOTAFLOW_LOG: 'warn' };
  delete env.KAFKA_BROKERS;
  delete env.REDIS_URL;
  const child = spawn(process.execPath, ['--import', 'tsx', join(PROJECT_ROOT, 'src/cli/main.ts'), 'stack', 'up', '--json'], {
    cwd: PROJECT_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    void exited.then((code) => reject(new Error(`stack up exited (${code}) before printing its addresses`)));
  });
  const { brokers, redisUrl } = JSON.parse(line) as { brokers: string[]; redisUrl: string };

  // Still up well after start-up: the command waits, it does not return.
  await new Promise((r) => setTimeout(r, 3_000));
  assert.equal(child.exitCode, null, 'stack up is still running');
  await waitForCluster(brokers, { timeoutMs: 10_000 });
  const u = new URL(redisUrl);
  assert.equal(await redisPing(u.hostname, Number(u.port)), true);

  child.kill('SIGINT');
  assert.equal(await exited, 0);
  await assert.rejects(waitForCluster(brokers, { timeoutMs: 1_500 }), 'Kafka is gone after Ctrl-C');
  assert.equal(await redisPing(u.hostname, Number(u.port), 500), false, 'Redis is gone after Ctrl-C');
});
