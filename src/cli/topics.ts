/**
 * `quotaflow topics create|describe`: the five topics of DESIGN §2 with the partitions, compaction
 * and retention src/kafka/topics.ts specifies, and a check that an existing cluster still matches.
 */
import { parseArgs } from 'node:util';
import kafkajs, { type Admin, type ITopicConfig } from 'kafkajs';
import { QuotaflowError } from '../errors.ts';
import { formatDuration } from '../windows/duration.ts';
import { connectAdmin, createKafka } from '../kafka/client.ts';
import { ensureTopics, topicNames, topicSpecs, type TopicNames } from '../kafka/topics.ts';
import { EXIT, wantsHelp, type Command, type CommandIO } from './command.ts';
import { table } from './ui.ts';

const { ConfigResourceTypes } = kafkajs; // CommonJS: the named ESM import misses it

const HELP = `quotaflow topics — create and check the Kafka topics quotaflow uses

Usage:
  quotaflow topics create   [--brokers LIST] [--prefix P] [--partitions N] [--replication N] [--json]
  quotaflow topics describe [--brokers LIST] [--prefix P] [--partitions N] [--json]

create    Creates every missing topic (quota.usage, quota.decisions, quota.audit, quota.usage.dlq,
          quota.overrides) with its partitions and configs: decisions and overrides compacted,
          usage kept 7 days, the audit trail 400 days, the DLQ 30 days. Never alters an existing
          topic. Prints each topic with whether it was created or already existed.
describe  Prints the same table for the topics that exist, without creating anything.

Both flag a topic whose partition count or cleanup.policy differs from the spec (and describe a
missing one) and then exit 1, so either works as a deployment check. Retention is shown, not checked.

Options:
  --brokers LIST     Kafka bootstrap brokers, comma-separated (default: $KAFKA_BROKERS)
  --prefix P         prepended to every topic name, e.g. "staging." (default: none)
  --partitions N     partitions of quota.usage (default 6); the other topics have fixed counts
  --replication N    replication factor of new topics (default: the broker's default.replication.factor)
  --json             machine-readable output
  -h, --help         this text

Examples:
  quotaflow stack up                                   # a local Kafka; prints KAFKA_BROKERS
  quotaflow topics create --brokers localhost:9092
  quotaflow topics create --brokers k1:9092,k2:9092,k3:9092 --partitions 24 --replication 3
  KAFKA_BROKERS=localhost:9092 quotaflow topics describe --prefix staging.
  quotaflow topics describe --json | jq '.topics[] | select(.differences | length > 0)'`;

/** What one topic looks like on the cluster, next to what the spec asks for. */
export interface TopicReport {
  topic: string;
  /** Which of the five topics (the TopicNames field). */
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

function parseOptions(argv: string[], io: CommandIO): Options {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        brokers: { type: 'string' },
        prefix: { type: 'string' },
        partitions: { type: 'string' },
        replication: { type: 'string' },
        json: { type: 'boolean' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (e) {
    throw usage(e instanceof Error ? e.message : String(e));
  }
  const { values, positionals } = parsed;
  const [action, ...extra] = positionals;
  if (action !== 'create' && action !== 'describe') throw usage(action === undefined ? 'topics needs a subcommand: create or describe' : `unknown subcommand '${action}': use create or describe`);
  if (extra.length) throw usage(`unexpected argument '${extra[0]}'`);
  if (action === 'describe' && values.replication !== undefined) throw usage('--replication applies to create only');

  const brokers = (values.brokers ?? io.env.KAFKA_BROKERS ?? '').split(',').map((b) => b.trim()).filter(Boolean);
  if (brokers.length === 0) {
    throw new QuotaflowError('USAGE', 'no Kafka brokers: --brokers was not given and KAFKA_BROKERS is not set', {
      hint: 'pass --brokers host:port[,host:port...], or run `quotaflow stack up` and use the KAFKA_BROKERS it prints',
    });
  }
  const prefix = values.prefix ?? '';
  // Kafka's own rule for topic names; checked here so the error names the option, not a broker code.
  if (!/^[A-Za-z0-9._-]*$/.test(prefix) || prefix.length + topicNames('').usageDlq.length > 249) {
    throw usage(`--prefix '${prefix}' would make invalid topic names: use letters, digits, '.', '_' and '-', at most ${249 - topicNames('').usageDlq.length} characters`);
  }
  return {
    action,
    brokers,
    prefix,
    usagePartitions: wholeNumber(values.partitions, '--partitions', 10_000),
    replicationFactor: wholeNumber(values.replication, '--replication', 32),
    json: values.json ?? false,
  };
}

function configValue(spec: ITopicConfig, name: string): string | undefined {
  return spec.configEntries?.find((c) => c.name === name)?.value;
}

/** Reads partitions and configs of the spec's topics from the cluster and compares them with the spec. */
async function inspect(admin: Admin, names: TopicNames, specs: ITopicConfig[], created: ReadonlySet<string>): Promise<TopicReport[]> {
  const existing = new Set(await admin.listTopics());
  const present = specs.filter((s) => existing.has(s.topic)).map((s) => s.topic);
  const metadata = present.length ? (await admin.fetchTopicMetadata({ topics: present })).topics : [];
  const configs = present.length
    ? (await admin.describeConfigs({
        includeSynonyms: false,
        resources: present.map((name) => ({ type: ConfigResourceTypes.TOPIC, name, configNames: ['cleanup.policy', 'retention.ms'] })),
      })).resources
    : [];
  const roles = Object.fromEntries(Object.entries(names).map(([role, topic]) => [topic, role])) as Record<string, keyof TopicNames>;

  return specs.map((spec) => {
    const expectedPartitions = spec.numPartitions ?? 1;
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
    const meta = metadata.find((t) => t.name === spec.topic);
    const entries = configs.find((r) => r.resourceName === spec.topic)?.configEntries ?? [];
    const config = (name: string) => entries.find((c) => c.configName === name)?.configValue ?? null;
    report.partitions = meta?.partitions.length ?? null;
    report.replicas = meta?.partitions.find((p) => p.partitionId === 0)?.replicas.length ?? null;
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

async function create(admin: Admin, specs: ITopicConfig[], opts: Options): Promise<Set<string>> {
  try {
    return new Set(await ensureTopics(admin, specs));
  } catch (e) {
    const causes = (e as { errors?: unknown[] }).errors ?? [e];
    const text = [...new Set(causes.map((c) => (c instanceof Error ? c.message : String(c))))].join('; ');
    const replication = causes.some((c) => (c as { type?: string }).type === 'INVALID_REPLICATION_FACTOR');
    throw new QuotaflowError('CONFIG_INVALID', `Kafka did not create the topics: ${text}`, {
      hint: replication
        ? `--replication ${opts.replicationFactor ?? '(broker default)'} needs at least that many brokers in the cluster`
        : 'check the broker logs; `quotaflow topics describe` shows what exists',
      cause: e,
    });
  }
}

export const topicsCommand: Command = {
  name: 'topics',
  summary: 'create or check the Kafka topics (partitions, compaction, retention)',
  help: HELP,
  async run(argv, io) {
    if (wantsHelp(argv) || argv.length === 0) {
      io.out(HELP);
      return argv.length === 0 ? EXIT.USAGE : EXIT.OK;
    }
    const opts = parseOptions(argv, io);
    const names = topicNames(opts.prefix);
    const specs = topicSpecs(names, { usagePartitions: opts.usagePartitions, replicationFactor: opts.replicationFactor });
    const kafka = createKafka({
      brokers: opts.brokers,
      clientId: 'quotaflow-topics',
      // A person is waiting: a few quick retries, then a clear error rather than a minute of backoff.
      retry: { initialRetryTime: 200, retries: 3, maxRetryTime: 1_000 },
      // Connection failures surface as our own error below; kafkajs's log lines would say it twice.
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
        opts.action === 'create' ? `${count('created')} created, ${count('existed')} already existed` : `${reports.length - count('missing')} of ${reports.length} exist`,
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
};
