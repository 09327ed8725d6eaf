/**
 * Every Kafka topic quotaflow uses: its name (with an optional prefix, so several deployments or
 * test runs can share a cluster), partitions, and the configs that make it what DESIGN.md §2 says
 * (compacted decision and override topics, long retention for the audit trail).
 */
import { QuotaflowError } from '../errors.ts';
import type { Admin, TopicSpec } from './port.ts';

export interface TopicNames {
  usage: string;
  decisions: string;
  audit: string;
  usageDlq: string;
  overrides: string;
  /** A region's own totals per counter and bucket, mirrored to the other regions by MirrorMaker 2 (DESIGN §5). */
  rollup: string;
}

export function topicNames(prefix = ''): TopicNames {
  return {
    usage: `${prefix}quota.usage`,
    decisions: `${prefix}quota.decisions`,
    audit: `${prefix}quota.audit`,
    usageDlq: `${prefix}quota.usage.dlq`,
    overrides: `${prefix}quota.overrides`,
    rollup: `${prefix}quota.rollup`,
  };
}

/**
 * The consumer groups quotaflow's processes form, named with the same prefix as the topics they
 * read: every aggregator of a deployment joins one group; a demo run has its own.
 */
export interface GroupNames {
  aggregators: string;
  demo: string;
}

export function groupNames(prefix = ''): GroupNames {
  return { aggregators: `${prefix}quotaflow-aggregators`, demo: `${prefix}quotaflow-demo` };
}

/** What each reader of a topic is called where a client shows it (kafkajs: its throwaway group's prefix). */
export const READER_LABELS = {
  decisions: 'quotaflow-gateway',
  overrides: 'quotaflow-overrides',
  overridesOnce: 'quotaflow-overrides-read',
  audit: 'quotaflow-audit',
  replay: 'quotaflow-replay',
} as const;

const DAY_MS = 86_400_000;

export function topicSpecs(names: TopicNames, opts: { usagePartitions?: number; replicationFactor?: number } = {}): TopicSpec[] {
  const rf = opts.replicationFactor ?? -1; // -1: the broker's default.replication.factor
  const compacted = { 'cleanup.policy': 'compact', 'min.compaction.lag.ms': '0' };
  return [
    { topic: names.usage, partitions: opts.usagePartitions ?? 6, replicationFactor: rf, configs: { 'retention.ms': String(7 * DAY_MS) } },
    { topic: names.decisions, partitions: 3, replicationFactor: rf, configs: compacted },
    { topic: names.audit, partitions: 3, replicationFactor: rf, configs: { 'retention.ms': String(400 * DAY_MS) } },
    { topic: names.usageDlq, partitions: 1, replicationFactor: rf, configs: { 'retention.ms': String(30 * DAY_MS) } },
    { topic: names.overrides, partitions: 1, replicationFactor: rf, configs: compacted },
    // Absolute totals keyed by counter and bucket: compaction keeps the newest of each, and buckets
    // older than any window are deleted after two days.
    {
      topic: names.rollup,
      partitions: 6,
      replicationFactor: rf,
      configs: { 'cleanup.policy': 'compact,delete', 'min.compaction.lag.ms': '0', 'retention.ms': String(2 * DAY_MS) },
    },
  ];
}

/** Creates the topics that do not exist yet and waits for their leaders; returns the names it created. */
export async function ensureTopics(admin: Admin, specs: readonly TopicSpec[], timeoutMs = 30_000): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const missing = specs.filter((s) => !existing.has(s.topic));
  if (missing.length === 0) return [];
  const names = missing.map((s) => s.topic);
  // Not a client's own wait for leaders: kafkajs's retries LEADER_NOT_AVAILABLE only, and a busy
  // broker answers UNKNOWN_TOPIC_OR_PARTITION for a topic it has just created (tulios/kafkajs#1222).
  // Until every partition has a leader, any answer (an error included) means "not yet".
  await admin.createTopics(missing);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const topics = await admin.topicMetadata(names);
      if (topics.length === names.length && topics.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return names;
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
    if (Date.now() > deadline) {
      throw new QuotaflowError('TIMEOUT', `the leaders of the new topics ${names.join(', ')} were not elected within ${timeoutMs} ms`, { retriable: true });
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
