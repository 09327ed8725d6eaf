/**
 * Shared by the aggregator's integration tests: a private set of topics, group and Redis key prefix
 * per test, usage events that a policy resolves, the exact Redis contents those events must produce
 * (computed independently of the aggregator), and readers that wait on Kafka records.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { follow } from '../../src/kafka/follow.ts';
import type { IncomingRecord, KafkaPort } from '../../src/kafka/port.ts';
import type { GatewayKafka } from '../../src/gateway/gateway.ts';
import type { Redis } from 'ioredis';
import { ensureTopics, topicNames, topicSpecs, type TopicNames } from '../../src/kafka/topics.ts';
import { compilePolicy, parsePolicyText, resolve, type CompiledPolicy } from '../../src/policy/index.ts';
import type { UsageEvent } from '../../src/events/index.ts';
import { deferred, testGatewayKafka, testKafka, uniqueName } from './integration.ts';

export interface AggregatorTestEnv {
  kafka: KafkaPort;
  /** The same Kafka as a Gateway takes it (settings, not a client). */
  gatewayKafka: GatewayKafka;
  topics: TopicNames;
  topicPrefix: string;
  groupId: string;
  keyPrefix: string;
  /** Registers cleanup that runs before the topics are deleted (last registered, first run). */
  defer(cleanup: () => Promise<unknown> | unknown): void;
}

export async function aggregatorEnv(t: TestContext, partitions = 6): Promise<AggregatorTestEnv> {
  const kafka = testKafka(undefined);
  const topicPrefix = `${uniqueName('agg')}.`;
  const topics = topicNames(topicPrefix);
  const admin = kafka.admin();
  await admin.connect();
  try {
    await ensureTopics(admin, topicSpecs(topics, { usagePartitions: partitions }));
  } catch (e) {
    // Not left connected: an open admin keeps the test process alive after the failure.
    await admin.deleteTopics(Object.values(topics)).catch(() => {});
    await admin.disconnect();
    throw e;
  }
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  // One hook, run in reverse: whatever uses the topics (aggregators, readers) stops before they go.
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    await admin.deleteTopics(Object.values(topics)).catch(() => {});
    await admin.disconnect();
  });
  return {
    kafka,
    gatewayKafka: testGatewayKafka(),
    topics,
    topicPrefix,
    groupId: uniqueName('agg-group'),
    keyPrefix: `${uniqueName('qf')}:`,
    defer: (c) => cleanups.push(c),
  };
}

/** A policy from YAML text (scaled-down copies of the shipped ones), also written to a file for child processes. */
export async function policyFromText(yaml: string): Promise<{ policy: CompiledPolicy; file: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'quotaflow-policy-'));
  const file = join(dir, 'policy.yaml');
  await writeFile(file, yaml);
  return { policy: compilePolicy(parsePolicyText(yaml, file)), file };
}

/** An admitted request of one API key (TalkPilot-shaped policies: scope and tenant api_key). */
export function usage(apiKey: string, eventTime: number, extra: Partial<UsageEvent> = {}): UsageEvent {
  return {
    schemaVersion: 1,
    eventTime,
    region: 'test',
    gatewayId: 'gw-test',
    subjects: { api_key: apiKey },
    api: null,
    cost: 1,
    outcome: { kind: 'admitted' },
    ...extra,
  };
}

export async function produceUsage(
  kafka: KafkaPort,
  topic: string,
  events: Array<{ key: string | null; value: Buffer | string | null; partition?: number }>,
  chunk = 2_000,
): Promise<void> {
  const producer = kafka.producer({ idempotent: true, retries: Number.MAX_SAFE_INTEGER, maxRetryMs: 5_000 });
  await producer.connect();
  try {
    for (let i = 0; i < events.length; i += chunk) {
      await producer.send(events.slice(i, i + chunk).map((e) => ({ topic, ...e })));
    }
  } finally {
    await producer.disconnect();
  }
}

export const asRecord = (e: UsageEvent) => ({ key: `api_key=${e.subjects.api_key}`, value: JSON.stringify(e) });

/**
 * What Redis must hold after these events, computed from the policy alone: per counter key, per
 * bucket field (`b<bucketMs>:<index>`), the summed cost of admitted events.
 */
export function groundTruth(
  policy: CompiledPolicy,
  events: UsageEvent[],
  field: (bucketMs: number, index: number) => string,
): Map<string, Map<string, number>> {
  const truth = new Map<string, Map<string, number>>();
  for (const e of events) {
    if (e.outcome.kind === 'refused') continue;
    const r = resolve(policy, { api: e.api ?? undefined, subjects: e.subjects });
    if (r.kind !== 'resolved' || r.unlimited) continue;
    let fields = truth.get(r.counterKey);
    if (!fields) truth.set(r.counterKey, (fields = new Map()));
    for (const bucketMs of new Set(r.limits.map((l) => l.bucketMs))) {
      const f = field(bucketMs, Math.floor(e.eventTime / bucketMs));
      fields.set(f, (fields.get(f) ?? 0) + e.cost);
    }
  }
  return truth;
}

/** The bucket fields of these counters as stored (meta fields left out). */
export async function storedCounts(redis: Redis, keyOf: (counterKey: string) => string, counterKeys: string[]): Promise<Map<string, Map<string, number>>> {
  const out = new Map<string, Map<string, number>>();
  for (let i = 0; i < counterKeys.length; i += 1_000) {
    const slice = counterKeys.slice(i, i + 1_000);
    const pipeline = redis.pipeline();
    for (const k of slice) pipeline.hgetall(keyOf(k));
    const replies = (await pipeline.exec()) ?? [];
    slice.forEach((k, j) => {
      const hash = (replies[j]?.[1] ?? {}) as Record<string, string>;
      out.set(
        k,
        new Map(
          Object.entries(hash)
            .filter(([f]) => !f.startsWith('_'))
            .map(([f, v]) => [f, Number(v)]),
        ),
      );
    });
  }
  return out;
}

/** Compares stored with expected; returns a short description of the first differences (empty when equal). */
export function differences(expected: Map<string, Map<string, number>>, stored: Map<string, Map<string, number>>): string[] {
  const out: string[] = [];
  for (const [key, fields] of expected) {
    const got = stored.get(key) ?? new Map();
    for (const [f, n] of fields) if (got.get(f) !== n) out.push(`${key} ${f}: expected ${n}, stored ${got.get(f) ?? 'nothing'}`);
    for (const [f, n] of got) if (!fields.has(f)) out.push(`${key} ${f}: not expected, stored ${n}`);
    if (out.length >= 10) break;
  }
  return out;
}

/** Reads a topic from the start until `done(all records so far)` holds, or times out. */
export async function readUntil(
  kafka: KafkaPort,
  topic: string,
  done: (records: IncomingRecord[]) => boolean,
  timeoutMs: number,
  what: string,
): Promise<IncomingRecord[]> {
  const records: IncomingRecord[] = [];
  const finished = deferred(what, timeoutMs);
  const follower = await follow(
    kafka,
    topic,
    (r) => {
      records.push(r);
      if (done(records)) finished.resolve();
    },
    { label: uniqueName('reader') },
  );
  try {
    if (done(records)) finished.resolve();
    await finished.promise;
    return records;
  } finally {
    await follower.stop();
  }
}
