/**
 * `quotaflow audit` over breaches an aggregator really recorded (real broker and Redis): the rows, the
 * totals and the filters, in table, JSON and CSV.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { auditCommand } from '../../src/cli/audit.ts';
import type { AuditRow } from '../../src/audit/trail.ts';
import { EXIT, type CommandIO } from '../../src/cli/command.ts';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { openUsageStore } from '../../src/store/index.ts';
import { configureLogging } from '../../src/log.ts';
import type { BreachRecord } from '../../src/events/index.ts';
import { services } from '../support/integration.ts';
import { aggregatorEnv, asRecord, policyFromText, produceUsage, readUntil, usage } from '../support/aggregator.ts';

configureLogging({ level: 'warn' });

async function audit(prefix: string, ...argv: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const io: CommandIO = {
    out: (t) => (out += t + '\n'),
    err: () => {},
    env: { KAFKA_BROKERS: services().brokers.join(',') },
    signal: new AbortController().signal,
  };
  return { code: await auditCommand.run([...argv, '--topic-prefix', prefix], io), out };
}

test('audit lists the breaches a test provoked, with duration, peak, refused and overshoot, in table, JSON and CSV', { timeout: 120_000 }, async (t) => {
  const env = await aggregatorEnv(t, 2);
  const { policy } = await policyFromText(`
version: "audit"
product: audit test
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { status: 429, body: plain, message: "Too Many Requests", headers: [retry-after] }
rules:
  - { id: per-key, default: true, scope: api_key, limits: [{ limit: 4, window: 2s, resolution: 100ms }] }
`);
  const store = await openUsageStore(services().redisUrl, { keyPrefix: env.keyPrefix });
  const aggregator = new Aggregator({ kafka: env.kafka, store, policy, topics: env.topics, groupId: env.groupId, region: 'test', nearRatio: 0 });
  env.defer(async () => {
    await aggregator.stop();
    await store.close();
  });
  await aggregator.start();

  const now = Date.now();
  const refused = (key: string) => usage(key, now, { outcome: { kind: 'refused', decision: { counterKey: 'x', windowMs: 2_000, decidedAt: now } } });
  // alpha: 7 admitted (3 over the limit of 4) and 2 refused; beta: 5 admitted (1 over); gamma: 3, never crosses.
  const events = [
    ...Array.from({ length: 7 }, () => usage('alpha', now)),
    refused('alpha'),
    refused('alpha'),
    ...Array.from({ length: 5 }, () => usage('beta', now)),
    ...Array.from({ length: 3 }, () => usage('gamma', now)),
  ];
  await produceUsage(env.kafka, env.topics.usage, events.map(asRecord));
  await readUntil(
    env.kafka,
    env.topics.audit,
    (rs) => rs.filter((r) => (JSON.parse(r.value!.toString()) as BreachRecord).liftedAt !== null).length >= 2,
    30_000,
    'two lifted breaches',
  );

  const json = await audit(env.topicPrefix, '--format', 'json');
  assert.equal(json.code, EXIT.OK);
  const { breaches, totals } = JSON.parse(json.out) as { breaches: AuditRow[]; totals: Record<string, number> };
  const byTenant = new Map(breaches.map((b) => [b.tenant, b]));
  assert.deepEqual([...byTenant.keys()].sort(), ['api_key=alpha', 'api_key=beta'], 'one row per breach: the opening and lifting records are folded');
  const alpha = byTenant.get('api_key=alpha')!;
  assert.deepEqual([alpha.limit, alpha.peakCount, alpha.overshoot, alpha.refused, alpha.firstCrossedAt], [4, 7, 3, 2, now]);
  assert.equal(alpha.liftedAt, Math.floor(now / 100) * 100 + 2_000, 'lifted when the crossing bucket left the window');
  assert.equal(alpha.durationMs, alpha.liftedAt! - now);
  assert.deepEqual([byTenant.get('api_key=beta')!.overshoot, byTenant.get('api_key=beta')!.refused], [1, 0]);
  assert.deepEqual(totals, { breaches: 2, open: 0, refused: 2, overshoot: 4, tenants: 2 });

  const table = await audit(env.topicPrefix);
  assert.match(table.out, /api_key=alpha\s+per-key\s+2s\s+4\s+\S+ \S+\s+[\d.]+m?s\s+7\s+2\s+3/);
  assert.match(table.out, /2 tenant\(s\)\s+2 breach\(es\)\s+0 open\s+2\s+4/);

  const csv = (await audit(env.topicPrefix, '--format', 'csv', '--tenant', 'alpha')).out.trim().split('\n');
  assert.equal(csv[0], 'tenant,rule,window,limit,firstCrossedAt,liftedAt,durationMs,peakCount,refused,overshoot,region,counterKey');
  assert.equal(csv.length, 2, 'the header and alpha only');
  const cells = csv[1]!.split(',');
  assert.deepEqual(
    [cells[0], cells[1], cells[3], cells[4], cells[7], cells[8], cells[9]],
    ['api_key=alpha', 'per-key', '4', new Date(now).toISOString(), '7', '2', '3'],
  );

  assert.match((await audit(env.topicPrefix, '--rule', 'other')).out, /no breaches match/);
  assert.equal(JSON.parse((await audit(env.topicPrefix, '--format', 'json', '--since', String(now + 1))).out).breaches.length, 0);
  assert.equal(JSON.parse((await audit(env.topicPrefix, '--format', 'json', '--until', String(now + 1))).out).breaches.length, 2);
});
