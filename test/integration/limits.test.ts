/**
 * `quotaflow limits set|get|rm` against a real broker, and what an override does to a blocked key
 * seen through two gateways and an aggregator: admitted again without a restart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { limitsCommand } from '../../src/cli/limits.ts';
import { EXIT, type CommandIO } from '../../src/cli/command.ts';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { Gateway } from '../../src/gateway/gateway.ts';
import { openUsageStore } from '../../src/store/index.ts';
import { configureLogging } from '../../src/log.ts';
import { isQuotaflowError } from '../../src/errors.ts';
import { services } from '../support/integration.ts';
import { aggregatorEnv, policyFromText } from '../support/aggregator.ts';

configureLogging({ level: 'warn' });

const POLICY = `
version: "limits"
product: limits test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 5, window: 60s }] }
`;

async function limits(prefix: string, ...argv: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const io: CommandIO = {
    out: (t) => (out += t + '\n'),
    err: (t) => (out += t + '\n'),
    env: { KAFKA_BROKERS: services().brokers.join(',') },
    signal: new AbortController().signal,
  };
  const code = await limitsCommand.run([argv[0]!, '--topic-prefix', prefix, ...argv.slice(1)], io);
  return { code, out };
}

test('limits set, get and rm round-trip through quota.overrides; bad keys and scopes are refused with the next step', { timeout: 120_000 }, async (t) => {
  const env = await aggregatorEnv(t, 1);
  const { file } = await policyFromText(POLICY);
  const key = 'rule=per-key:api_key=vip';
  assert.equal(
    (
      await limits(
        env.topicPrefix,
        'set',
        '--key',
        key,
        '--limit',
        '300',
        '--window',
        '60s',
        '--limit',
        '10000',
        '--window',
        '1h',
        '--reason',
        'ticket 42',
        '--policy',
        file,
      )
    ).code,
    EXIT.OK,
  );
  await limits(env.topicPrefix, 'set', '--key', 'rule=per-key:api_key=probe', '--unlimited');

  const got = await limits(env.topicPrefix, 'get', '--key', key, '--json');
  assert.equal(got.code, EXIT.OK);
  const o = JSON.parse(got.out);
  assert.equal(o.rule, 'per-key');
  assert.deepEqual(o.subjects, { api_key: 'vip' });
  assert.deepEqual(o.limits, [
    { limit: 300, window: '60s', kind: 'rolling' },
    { limit: 10000, window: '1h', kind: 'rolling' },
  ]);
  assert.equal(o.reason, 'ticket 42');
  const listed = await limits(env.topicPrefix, 'get');
  assert.match(listed.out, /rule=per-key:api_key=vip .*300\/60s, 10000\/1h/);
  assert.match(listed.out, /rule=per-key:api_key=probe .*unlimited/);

  assert.equal((await limits(env.topicPrefix, 'rm', '--key', key)).code, EXIT.OK);
  const gone = await limits(env.topicPrefix, 'get', '--key', key);
  assert.equal(gone.code, EXIT.FAILURE);
  assert.match(gone.out, /no runtime override/);

  const usage = async (...argv: string[]) => {
    try {
      await limits(env.topicPrefix, ...argv);
      return undefined;
    } catch (e) {
      assert.ok(isQuotaflowError(e) && e.code === 'USAGE', String(e));
      return e.describe();
    }
  };
  assert.match((await usage('set', '--key', 'api_key=vip', '--limit', '1', '--window', '1s'))!, /not a scope key[\s\S]*→ a key looks like/);
  assert.match((await usage('set', '--key', key, '--limit', '1'))!, /one --window for each --limit/);
  assert.match((await usage('set', '--key', 'rule=nope:api_key=x', '--limit', '1', '--window', '1s', '--policy', file))!, /no rule "nope"[\s\S]*per-key/);
  assert.match((await usage('set', '--key', 'rule=per-key:account=x', '--limit', '1', '--window', '1s', '--policy', file))!, /does not match the scope/);
});

test("raising a blocked key's limit with `limits set` admits it again on every gateway, without a restart; `rm` restores the limit", {
  timeout: 120_000,
}, async (t) => {
  const env = await aggregatorEnv(t, 2);
  const { policy } = await policyFromText(POLICY);
  const store = await openUsageStore(services().redisUrl, { keyPrefix: env.keyPrefix });
  const aggregator = new Aggregator({ kafka: env.kafka, store, policy, topics: env.topics, groupId: env.groupId, region: 'test' });
  const a = new Gateway({ policy, kafka: env.gatewayKafka, topicPrefix: env.topicPrefix, gatewayId: 'a' });
  const b = new Gateway({ policy, kafka: env.gatewayKafka, topicPrefix: env.topicPrefix, gatewayId: 'b' });
  env.defer(async () => {
    await Promise.all([a.stop(), b.stop()]);
    await aggregator.stop();
    await store.close();
  });
  await aggregator.start();
  a.start();
  b.start();
  await Promise.all([a.whenWarm(), b.whenWarm()]);
  const check = (g: Gateway) => g.check({ method: 'GET', path: '/x', headers: { 'x-api-key': 'vip' } });
  const until = async (what: string, ok: () => boolean, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!ok()) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  for (let i = 0; i < 5; i++) assert.equal(check(a).allowed, true);
  assert.equal(check(a).reason, 'local-limit');
  await until('the block to reach gateway b', () => check(b).reason === 'blocked');

  const setAt = Date.now();
  assert.equal((await limits(env.topicPrefix, 'set', '--key', 'rule=per-key:api_key=vip', '--limit', '100', '--window', '60s')).code, EXIT.OK);
  await until('both gateways to admit the key', () => {
    const ra = check(a);
    const rb = check(b);
    return ra.allowed && rb.allowed;
  });
  t.diagnostic(`admitted on both gateways ${Date.now() - setAt} ms after \`limits set\` returned`);
  const admitted = check(a);
  assert.equal(admitted.reason, 'admitted');

  assert.equal((await limits(env.topicPrefix, 'rm', '--key', 'rule=per-key:api_key=vip')).code, EXIT.OK);
  await until("gateway a to refuse again under the policy's limit of 5", () => !check(a).allowed);
});
