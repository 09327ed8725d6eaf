/**
 * Every Kafka topic quotaflow uses: its name (with an optional prefix, so several deployments or
 * test runs can share a cluster), partitions, and the configs that make it what DESIGN.md §2 says
 * (compacted decision and override topics, long retention for the audit trail).
 */
import type { Admin, ITopicConfig } from 'kafkajs';
import { QuotaflowError } from '../errors.ts';

export interface TopicNames {
  usage: string;
  decisions: string;
  audit: string;
  usageDlq: string;
  overrides: string;
}

export function topicNames(prefix = ''): TopicNames {
  return {
    usage: `${prefix}quota.usage`,
    decisions: `${prefix}quota.decisions`,
    audit: `${prefix}quota.audit`,
    usageDlq: `${prefix}quota.usage.dlq`,
    overrides: `${prefix}quota.overrides`,
  };
}

const DAY_MS = 86_400_000;

export function topicSpecs(names: TopicNames, opts: { usagePartitions?: number; replicationFactor?: number } = {}): ITopicConfig[] {
  const rf = opts.replicationFactor ?? -1; // -1: the broker's default.replication.factor
  const compacted = [{ name: 'cleanup.policy', value: 'compact' }, { name: 'min.compaction.lag.ms', value: '0' }];
  return [
    { topic: names.usage, numPartitions: opts.usagePartitions ?? 6, replicationFactor: rf, configEntries: [{ name: 'retention.ms', value: String(7 * DAY_MS) }] },
    { topic: names.decisions, numPartitions: 3, replicationFactor: rf, configEntries: compacted },
    { topic: names.audit, numPartitions: 3, replicationFactor: rf, configEntries: [{ name: 'retention.ms', value: String(400 * DAY_MS) }] },
    { topic: names.usageDlq, numPartitions: 1, replicationFactor: rf, configEntries: [{ name: 'retention.ms', value: String(30 * DAY_MS) }] },
    { topic: names.overrides, numPartitions: 1, replicationFactor: rf, configEntries: compacted },
  ];
}

/** What a broker answers about a topic it has created but whose leaders it does not know yet. */
const NOT_YET = new Set(['LEADER_NOT_AVAILABLE', 'UNKNOWN_TOPIC_OR_PARTITION']);
const errorType = (e: unknown): unknown => {
  const x = e as { type?: unknown; cause?: { type?: unknown }; originalError?: { type?: unknown } } | null;
  return x?.type ?? x?.cause?.type ?? x?.originalError?.type;
};

/** Creates the topics that do not exist yet and waits for their leaders; returns the names it created. */
export async function ensureTopics(admin: Admin, specs: ITopicConfig[], timeoutMs = 30_000): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const missing = specs.filter((s) => !existing.has(s.topic));
  if (missing.length === 0) return [];
  const names = missing.map((s) => s.topic);
  // Not kafkajs's waitForLeaders: it retries LEADER_NOT_AVAILABLE only, and a busy broker answers
  // UNKNOWN_TOPIC_OR_PARTITION for a topic it has just created (tulios/kafkajs#1222), which failed
  // several topic creations at once.
  await admin.createTopics({ topics: missing, waitForLeaders: false });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const { topics } = await admin.fetchTopicMetadata({ topics: names });
      if (topics.length === names.length && topics.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return names;
    } catch (e) {
      if (!NOT_YET.has(errorType(e) as string)) throw e;
    }
    if (Date.now() > deadline) {
      throw new QuotaflowError('TIMEOUT', `the leaders of the new topics ${names.join(', ')} were not elected within ${timeoutMs} ms`, { retriable: true });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
