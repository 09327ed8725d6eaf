/**
 * `quotaflow topics create|describe`: the six topics of DESIGN §2 with the partitions, compaction
 * and retention src/kafka/topics.ts specifies, and a check that an existing cluster still matches.
 */
import { QuotaflowError } from '../errors.ts';
import { formatDuration } from '../windows/duration.ts';
import { connectAdmin, kafkaPort } from '../kafka/client.ts';
import { ensureTopics, topicNames, topicSpecs, type TopicNames } from '../kafka/topics.ts';
import type { Admin, KafkaClientName, TopicSpec } from '../kafka/port.ts';
import { EXIT } from './command.ts';
import { defineCommand, type Values } from './define.ts';
import { SHARED, kafkaBrokers, kafkaClient, shared, topicPrefix } from './settings.ts';
import { table } from './ui.ts';

/** What one topic looks like on the cluster, next to what the spec asks for. */
export interface TopicReport {
  topic: string;
  /** Which of the six topics (the TopicNames field). */
  role: keyof TopicNames;
  status: 'created' | 'existed' | 'missing';
  partitions: number | null;
  expectedPartitions: number;
  /** Replicas of partition 0. */
  replicas: number | null;
  cleanupPolicy: string | null;
  expectedCleanupPolicy: string;
  /** -1: kept forever. */
  retentionMs: number | null;
  expectedRetentionMs: number | null;
  /** Empty when the topic matches the spec. */
  differences: string[];
}

interface Options {
  action: 'create' | 'describe';
  brokers: string[];
  client: KafkaClientName;
  prefix: string;
  usagePartitions: number | undefined;
  replicationFactor: number | undefined;
  json: boolean;
}

function usage(message: string): QuotaflowError {
  return new QuotaflowError('USAGE', message, { hint: 'run `quotaflow topics --help` for usage and examples' });
}

function wholeNumber(value: string | undefined, option: string, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > max) throw usage(`${option} takes a whole number from 1 to ${max}, not '${value}'`);
  return n;
}

const OPTIONS = {
  ...shared('brokers', 'kafka-client'),
  // --prefix was its name before the flags were shared; it still works.
  'topic-prefix': { ...SHARED['topic-prefix'], help: 'prepended to every topic name, e.g. "staging."', aliases: ['prefix'] },
  partitions: { type: 'string', value: 'N', help: 'partitions of quota.usage (default 6); the other topics have fixed counts' },
  replication: { type: 'string', value: 'N', help: "replication factor of new topics (default: the broker's default.replication.factor)" },
  ...shared('json'),
} as const;

function optionsOf(action: Options['action'], values: Values<typeof OPTIONS>, env: NodeJS.ProcessEnv): Options {
  if (action === 'describe' && values.replication !== undefined) throw usage('--replication applies to create only');
  return {
    action,
    brokers: kafkaBrokers(values, env),
    client: kafkaClient(values, env),
    prefix: topicPrefix(values, env),
    usagePartitions: wholeNumber(values.partitions, '--partitions', 10_000),
    replicationFactor: wholeNumber(values.replication, '--replication', 32),
    json: values.json ?? false,
  };
}

function configValue(spec: TopicSpec, name: string): string | undefined {
  return spec.configs[name];
}

/** Reads partitions and configs of the spec's topics from the cluster and compares them with the spec. */
async function inspect(admin: Admin, names: TopicNames, specs: readonly TopicSpec[], created: ReadonlySet<string>): Promise<TopicReport[]> {
  const existing = new Set(await admin.listTopics());
  const present = specs.filter((s) => existing.has(s.topic)).map((s) => s.topic);
  const metadata = present.length ? await admin.topicMetadata(present) : [];
  const configs = present.length ? await admin.topicConfigs(present, ['cleanup.policy', 'retention.ms']) : new Map<string, Map<string, string>>();
  const roles = Object.fromEntries(Object.entries(names).map(([role, topic]) => [topic, role])) as Record<string, keyof TopicNames>;

  return specs.map((spec) => {
    const expectedPartitions = spec.partitions;
    const expectedCleanupPolicy = configValue(spec, 'cleanup.policy') ?? 'delete';
    const retention = configValue(spec, 'retention.ms');
    const report: TopicReport = {
      topic: spec.topic,
      role: roles[spec.topic]!,
      status: created.has(spec.topic) ? 'created' : existing.has(spec.topic) ? 'existed' : 'missing',
      partitions: null,
      expectedPartitions,
      replicas: null,
      cleanupPolicy: null,
      expectedCleanupPolicy,
      retentionMs: null,
      expectedRetentionMs: retention === undefined ? null : Number(retention),
      differences: [],
    };
    if (report.status === 'missing') {
      report.differences.push('missing');
      return report;
    }
    const meta = metadata.find((t) => t.topic === spec.topic);
    const config = (name: string) => configs.get(spec.topic)?.get(name) ?? null;
    report.partitions = meta?.partitions.length ?? null;
    report.replicas = meta?.partitions.find((p) => p.partition === 0)?.replicas.length ?? null;
    report.cleanupPolicy = config('cleanup.policy');
    const retentionMs = config('retention.ms');
    report.retentionMs = retentionMs === null ? null : Number(retentionMs);
    if (report.partitions !== expectedPartitions) report.differences.push(`partitions ${report.partitions ?? '?'}, spec ${expectedPartitions}`);
    if (report.cleanupPolicy !== expectedCleanupPolicy) report.differences.push(`cleanup.policy ${report.cleanupPolicy ?? '?'}, spec ${expectedCleanupPolicy}`);
    return report;
  });
}

function retentionText(r: TopicReport): string {
  if (r.retentionMs === null) return '—';
  // retention.ms only deletes under a `delete` policy: showing 7d on a compacted topic would mislead.
  if (r.cleanupPolicy !== null && !r.cleanupPolicy.split(',').includes('delete')) return '—';
  if (r.retentionMs < 0) return 'forever';
  return formatDuration(r.retentionMs);
}

function render(reports: TopicReport[]): string {
  const rows = reports.map((r) => [
    r.topic,
    r.partitions ?? '—',
    r.cleanupPolicy ?? '—',
    retentionText(r),
    r.status,
    r.status === 'missing' ? 'MISSING' : r.differences.length ? `DIFFERS: ${r.differences.join('; ')}` : 'ok',
  ]);
  return table(['topic', 'partitions', 'cleanup.policy', 'retention', 'status', 'check'], rows, ['left', 'right', 'left', 'right', 'left', 'left']);
}

async function create(admin: Admin, specs: readonly TopicSpec[], opts: Options): Promise<Set<string>> {
  try {
    return new Set(await ensureTopics(admin, specs));
  } catch (e) {
    const causes = (e as { errors?: unknown[] }).errors ?? [e];
    const text = [...new Set(causes.map((c) => (c instanceof Error ? c.message : String(c))))].join('; ');
    // Each client words it its own way; both name the replication factor.
    const replication = /replication factor/i.test(text) || causes.some((c) => (c as { type?: string }).type === 'INVALID_REPLICATION_FACTOR');
    throw new QuotaflowError('CONFIG_INVALID', `Kafka did not create the topics: ${text}`, {
      hint: replication
        ? `--replication ${opts.replicationFactor ?? '(broker default)'} needs at least that many brokers in the cluster`
        : 'check the broker logs; `quotaflow topics describe` shows what exists',
      cause: e,
    });
  }
}

export const topicsCommand = defineCommand({
  name: 'topics',
  summary: 'create or check the Kafka topics (partitions, compaction, retention)',
  usage: [
    'quotaflow topics create   [--brokers LIST] [--topic-prefix P] [--partitions N] [--replication N] [--json]',
    'quotaflow topics describe [--brokers LIST] [--topic-prefix P] [--partitions N] [--json]',
  ],
  description: `Creates and checks the Kafka topics quotaflow uses.

Both flag a topic whose partition count or cleanup.policy differs from the spec (and describe a
missing one) and then exit 1, so either works as a deployment check. Retention is shown, not checked.`,
  subcommands: [
    {
      name: 'create',
      help: `Creates every missing topic (quota.usage, quota.decisions, quota.audit, quota.usage.dlq,
quota.overrides, quota.rollup) with its partitions and configs: decisions and overrides
compacted, usage kept 7 days, the audit trail 400 days, the DLQ 30 days, the regional
rollups compacted and kept 2 days. Never alters an existing topic. Prints each topic with
whether it was created or already existed.`,
    },
    { name: 'describe', help: 'Prints the same table for the topics that exist, without creating anything.' },
  ],
  options: OPTIONS,
  examples: [
    'quotaflow stack up                                   # a local Kafka; prints KAFKA_BROKERS',
    'quotaflow topics create --brokers localhost:9092',
    'quotaflow topics create --brokers k1:9092,k2:9092,k3:9092 --partitions 24 --replication 3',
    'KAFKA_BROKERS=localhost:9092 quotaflow topics describe --topic-prefix staging.',
    "quotaflow topics describe --json | jq '.topics[] | select(.differences | length > 0)'",
  ],
  exitCodes: {
    0: 'every topic matches the spec',
    1: 'a topic is missing or differs from the spec, or Kafka did not create one',
    2: 'bad usage',
    3: 'Kafka unreachable',
  },
  async run({ values, subcommand, io }) {
    const opts = optionsOf(subcommand, values, io.env);
    const names = topicNames(opts.prefix);
    const specs = topicSpecs(names, { usagePartitions: opts.usagePartitions, replicationFactor: opts.replicationFactor });
    const kafka = kafkaPort({
      brokers: opts.brokers,
      clientId: 'quotaflow-topics',
      client: opts.client,
      // A person is waiting: a few quick retries, then a clear error rather than a minute of backoff.
      retry: { initialRetryMs: 200, retries: 3, maxRetryMs: 1_000 },
      // Connection failures surface as our own error below; the client's log lines would say it twice.
      minLogLevel: 'nothing',
    });
    const admin = kafka.admin();
    await connectAdmin(admin, opts.brokers);
    let reports: TopicReport[];
    try {
      const created = opts.action === 'create' ? await create(admin, specs, opts) : new Set<string>();
      reports = await inspect(admin, names, specs, created);
    } finally {
      await admin.disconnect().catch(() => {});
    }

    const differing = reports.filter((r) => r.differences.length > 0);
    if (opts.json) {
      io.out(JSON.stringify({ action: opts.action, brokers: opts.brokers, prefix: opts.prefix, ok: differing.length === 0, topics: reports }, null, 2));
    } else {
      io.out(render(reports));
      const count = (status: TopicReport['status']) => reports.filter((r) => r.status === status).length;
      const wrong = differing.length - count('missing');
      const summary = [
        opts.action === 'create'
          ? `${count('created')} created, ${count('existed')} already existed`
          : `${reports.length - count('missing')} of ${reports.length} exist`,
        ...(count('missing') ? [`${count('missing')} missing`] : []),
        ...(wrong ? [`${wrong} differ${wrong === 1 ? 's' : ''} from the spec`] : []),
        ...(differing.length ? [] : ['all match the spec']),
      ];
      io.out(`\n${summary.join('; ')}`);
      if (wrong) {
        io.err(
          'quotaflow topics: existing topics are never altered: fix them by hand (kafka-configs.sh, or delete and re-create ' +
            'if the data can go); if quota.usage was given more partitions on purpose, pass --partitions N',
        );
      }
    }
    return differing.length ? EXIT.FAILURE : EXIT.OK;
  },
});
