/** `quotaflow topics` against the real broker, run in-process with a random prefix per test. */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import kafkajs, { type Admin } from 'kafkajs';
import { independentAdmin, services, testKafka, uniqueName } from '../support/integration.ts';
import { topicsCommand, type TopicReport } from '../../src/cli/topics.ts';
import { EXIT, type CommandIO } from '../../src/cli/command.ts';
import { isQuotaflowError } from '../../src/errors.ts';
import { ensureTopics, topicNames, type TopicNames } from '../../src/kafka/topics.ts';

const { ConfigResourceTypes } = kafkajs; // CommonJS: named ESM imports miss some exports
const DAY_MS = 86_400_000;

interface Captured {
  io: CommandIO;
  out: string[];
  err: string[];
}

function capturingIO(env: NodeJS.ProcessEnv = {}): Captured {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t) => out.push(t), err: (t) => err.push(t), env, signal: new AbortController().signal }, out, err };
}

async function runTopics(argv: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; out: string; err: string }> {
  const c = capturingIO(env);
  const code = await topicsCommand.run(argv, c.io);
  return { code, out: c.out.join('\n'), err: c.err.join('\n') };
}

async function runJson(argv: string[]): Promise<{ code: number; report: { ok: boolean; topics: TopicReport[] } }> {
  const r = await runTopics([...argv, '--json']);
  return { code: r.code, report: JSON.parse(r.out) as { ok: boolean; topics: TopicReport[] } };
}

/**
 * A connected admin (kafkajs's own, to check what the command did independently of quotaflow's Kafka
 * port) and a prefix no other test uses; the prefix's topics are deleted when the test ends.
 */
async function fresh(t: TestContext): Promise<{ admin: Admin; prefix: string; names: TopicNames }> {
  const admin = independentAdmin();
  await admin.connect();
  const prefix = `${uniqueName('it-topics')}.`;
  t.after(async () => {
    try {
      const mine = (await admin.listTopics()).filter((n) => n.startsWith(prefix));
      if (mine.length) await admin.deleteTopics({ topics: mine }).catch(() => {});
    } finally {
      await admin.disconnect();
    }
  });
  return { admin, prefix, names: topicNames(prefix) };
}

describe('quotaflow topics against a real broker', () => {
  const brokers = services().brokers.join(',');

  test("create makes all five topics with the spec's partitions, compaction and retention; a second create finds them all", { timeout: 60_000 }, async (t) => {
    const { admin, prefix, names } = await fresh(t);

    const first = await runTopics(['create', '--brokers', brokers, '--prefix', prefix, '--partitions', '4']);
    assert.equal(first.code, EXIT.OK, first.err);
    for (const topic of Object.values(names)) assert.match(first.out, new RegExp(`^${topic.replaceAll('.', '\\.')}\\s.*\\screated\\s+ok$`, 'm'));
    assert.match(first.out, /6 created, 0 already existed; all match the spec/);

    const meta = await admin.fetchTopicMetadata({ topics: Object.values(names) });
    const partitions = Object.fromEntries(meta.topics.map((m) => [m.name, m.partitions.length]));
    assert.deepEqual(partitions, { [names.usage]: 4, [names.decisions]: 3, [names.audit]: 3, [names.usageDlq]: 1, [names.overrides]: 1, [names.rollup]: 6 });

    const described = await admin.describeConfigs({
      includeSynonyms: false,
      resources: Object.values(names).map((name) => ({ type: ConfigResourceTypes.TOPIC, name, configNames: ['cleanup.policy', 'retention.ms'] })),
    });
    const config = (topic: string, key: string) => described.resources.find((r) => r.resourceName === topic)!.configEntries.find((c) => c.configName === key)!;
    assert.equal(config(names.decisions, 'cleanup.policy').configValue, 'compact');
    assert.equal(config(names.overrides, 'cleanup.policy').configValue, 'compact');
    assert.equal(config(names.rollup, 'cleanup.policy').configValue, 'compact,delete');
    assert.equal(config(names.rollup, 'retention.ms').configValue, String(2 * DAY_MS));
    for (const [topic, days] of [
      [names.usage, 7],
      [names.audit, 400],
      [names.usageDlq, 30],
    ] as const) {
      assert.equal(config(topic, 'cleanup.policy').configValue, 'delete', topic);
      assert.equal(config(topic, 'retention.ms').configValue, String(days * DAY_MS), topic);
      assert.equal(config(topic, 'retention.ms').isDefault, false, `${topic}: retention set on the topic, not inherited`);
    }

    const second = await runJson(['create', '--brokers', brokers, '--prefix', prefix, '--partitions', '4']);
    assert.equal(second.code, EXIT.OK);
    assert.equal(second.report.ok, true);
    assert.deepEqual(
      second.report.topics.map((r) => [r.role, r.status, r.differences]),
      [
        ['usage', 'existed', []],
        ['decisions', 'existed', []],
        ['audit', 'existed', []],
        ['usageDlq', 'existed', []],
        ['overrides', 'existed', []],
        ['rollup', 'existed', []],
      ],
    );
    const usage = second.report.topics[0]!;
    assert.deepEqual(
      { partitions: usage.partitions, cleanupPolicy: usage.cleanupPolicy, retentionMs: usage.retentionMs, replicas: usage.replicas },
      { partitions: 4, cleanupPolicy: 'delete', retentionMs: 7 * DAY_MS, replicas: 1 },
    );

    // describe reads the same; with the default of 6 usage partitions, the 4-partition usage topic differs.
    const asBuilt = await runJson(['describe', '--brokers', brokers, '--prefix', prefix, '--partitions', '4']);
    assert.equal(asBuilt.code, EXIT.OK);
    assert.ok(asBuilt.report.topics.every((r) => r.status === 'existed'));
    const againstDefault = await runJson(['describe', '--brokers', brokers, '--prefix', prefix]);
    assert.equal(againstDefault.code, EXIT.FAILURE);
    assert.deepEqual(
      againstDefault.report.topics.filter((r) => r.differences.length).map((r) => [r.topic, r.differences]),
      [[names.usage, ['partitions 4, spec 6']]],
    );
  });

  test('describe flags a topic created with the wrong partitions and cleanup policy, and the missing ones', { timeout: 60_000 }, async (t) => {
    const { admin, prefix, names } = await fresh(t);
    // A decisions topic that is not compacted: a new gateway could not read every live block from it.
    const setup = testKafka(undefined).admin();
    await setup.connect();
    await ensureTopics(setup, [{ topic: names.decisions, partitions: 1, replicationFactor: -1, configs: { 'cleanup.policy': 'delete' } }]).finally(() =>
      setup.disconnect(),
    );

    const before = await runTopics(['describe', '--brokers', brokers, '--prefix', prefix]);
    assert.equal(before.code, EXIT.FAILURE);
    assert.match(
      before.out,
      new RegExp(
        `^${names.decisions.replaceAll('.', '\\.')}\\s+1\\s+delete\\s.*existed\\s+DIFFERS: partitions 1, spec 3; cleanup\\.policy delete, spec compact$`,
        'm',
      ),
    );
    assert.match(before.out, new RegExp(`^${names.usage.replaceAll('.', '\\.')}\\s.*missing\\s+MISSING$`, 'm'));
    assert.match(before.out, /^1 of 6 exist; 5 missing; 1 differs from the spec$/m);
    assert.match(before.err, /never altered/);
    assert.deepEqual(await admin.listTopics().then((all) => all.filter((n) => n.startsWith(prefix))), [names.decisions], 'describe creates nothing');

    // create adds the five missing topics, leaves the wrong one alone, and still reports it.
    const created = await runJson(['create', '--brokers', brokers, '--prefix', prefix]);
    assert.equal(created.code, EXIT.FAILURE);
    assert.equal(created.report.ok, false);
    const byRole = Object.fromEntries(created.report.topics.map((r) => [r.role, r]));
    assert.equal(byRole.decisions!.status, 'existed');
    assert.deepEqual(byRole.decisions!.differences, ['partitions 1, spec 3', 'cleanup.policy delete, spec compact']);
    for (const role of ['usage', 'audit', 'usageDlq', 'overrides', 'rollup']) {
      assert.equal(byRole[role]!.status, 'created', role);
      assert.deepEqual(byRole[role]!.differences, [], role);
    }
  });

  test('brokers come from KAFKA_BROKERS in io.env when --brokers is absent', { timeout: 60_000 }, async (t) => {
    const { prefix } = await fresh(t);
    const r = await runTopics(['describe', '--prefix', prefix], { KAFKA_BROKERS: brokers });
    assert.equal(r.code, EXIT.FAILURE, 'nothing exists under a fresh prefix');
    assert.match(r.out, /^0 of 6 exist; 6 missing$/m);
    assert.equal(r.err, '', 'nothing to fix by hand: they are only missing');
  });

  test('without brokers, or with unreachable ones, the error says what to do', { timeout: 60_000 }, async () => {
    await assert.rejects(runTopics(['create']), (e) => {
      assert.ok(isQuotaflowError(e));
      assert.equal(e.code, 'USAGE');
      assert.match(e.describe(), /--brokers/);
      assert.match(e.describe(), /quotaflow stack up/);
      return true;
    });
    await assert.rejects(runTopics(['describe', '--brokers', '127.0.0.1:1']), (e) => {
      assert.ok(isQuotaflowError(e));
      assert.equal(e.code, 'SERVICE_UNREACHABLE');
      assert.match(e.describe(), /127\.0\.0\.1:1[\s\S]*quotaflow stack up/);
      return true;
    });
  });

  test('--help shows examples; bad options are usage errors', async () => {
    const help = await runTopics(['--help']);
    assert.equal(help.code, EXIT.OK);
    assert.match(help.out, /Examples:\n\s+quotaflow stack up/);
    assert.equal((await runTopics([])).code, EXIT.USAGE);
    for (const argv of [
      ['drop'],
      ['create', '--partitions', '0'],
      ['create', '--partitions', 'six'],
      ['create', '--prefix', 'bad/name'],
      ['describe', '--replication', '3'],
      ['create', '--frobnicate'],
    ]) {
      await assert.rejects(runTopics([...argv, '--brokers', brokers]), (e) => isQuotaflowError(e) && e.code === 'USAGE', argv.join(' '));
    }
  });
});
