/**
 * Every Kafka topic quotaflow uses: its name (with an optional prefix, so several deployments or
 * test runs can share a cluster), partitions, and the configs that make it what DESIGN.md §2 says
 * (compacted decision and override topics, long retention for the audit trail).
 */
import type { Admin, ITopicConfig } from 'kafkajs';

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

/** Creates the topics that do not exist yet; returns the names it created. */
export async function ensureTopics(admin: Admin, specs: ITopicConfig[]): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const missing = specs.filter((s) => !existing.has(s.topic));
  if (missing.length) await admin.createTopics({ topics: missing, waitForLeaders: true });
  return missing.map((s) => s.topic);
}
