/**
 * "Ours": one Aggregator on the real Redis draining the backlog until every event is committed,
 * with its store round trips timed, and what its counters and tenants hold once it stops.
 */
import type { Aggregator } from '../../../src/aggregator/aggregator.ts';
import type { UsageStore } from '../../../src/store/index.ts';
import { kafkaPort } from '../../../src/kafka/client.ts';
import type { KafkaPort } from '../../../src/kafka/port.ts';
import { topicNames } from '../../../src/kafka/topics.ts';
import { logger } from '../../../src/log.ts';
import { compilePolicy, parsePolicyText } from '../../../src/policy/index.ts';
import { openUsageStore } from '../../../src/store/index.ts';
import { benchAggregator, startAggregator } from '../common/aggregator.ts';
import { memory } from '../common/memory.ts';
import { DRAIN_TIMEOUT_MS, DrainClock, finishLine, PARTITIONS_CONCURRENTLY, reportProgress } from './drain.ts';
import type { AggregatorFigures, AggregatorTask, DrainResult } from './tasks.ts';

/** The port, calling `onBatch` before each batch the consumer of `groupId` hands over (the same instant the bare consumer's clock starts at). */
function withBatchHook(kafka: KafkaPort, groupId: string, onBatch: () => void): KafkaPort {
  return {
    client: kafka.client,
    brokers: kafka.brokers,
    producer: (opts) => kafka.producer(opts),
    read: (topic, starts, handle, opts) => kafka.read(topic, starts, handle, opts),
    admin: () => kafka.admin(),
    consumer: (opts) => {
      const consumer = kafka.consumer(opts);
      if (opts.groupId !== groupId) return consumer;
      return {
        run: (run) =>
          consumer.run({
            ...run,
            onBatch: (batch) => {
              onBatch();
              return run.onBatch(batch);
            },
          }),
        stop: () => consumer.stop(),
      };
    },
  };
}

/** The aggregator's store port, timing each round trip (serialization, network, the Lua script). */
function timedStore(inner: UsageStore) {
  const t = { loads: 0, applies: 0, loadMs: 0, applyMs: 0, metaWrites: 0 };
  const store: UsageStore = {
    async load(partition, tenants) {
      const s = performance.now();
      try {
        return await inner.load(partition, tenants);
      } finally {
        t.loads++;
        t.loadMs += performance.now() - s;
      }
    },
    async apply(partition, writes) {
      if (writes.every((w) => w.newFence === w.expectedFence && w.counters.every((c) => c.increments.length === 0))) {
        t.metaWrites++;
        return inner.apply(partition, writes);
      }
      const s = performance.now();
      try {
        return await inner.apply(partition, writes);
      } finally {
        t.applies++;
        t.applyMs += performance.now() - s;
      }
    },
  };
  return { store, timings: t };
}

export async function drainAggregator(task: AggregatorTask, signal: AbortSignal): Promise<DrainResult> {
  const clock = new DrainClock();
  const kafka = withBatchHook(
    kafkaPort({ brokers: task.brokers, client: task.client, clientId: 'quotaflow-bench-aggregator', minLogLevel: 'error' }),
    task.groupId,
    () => clock.start(),
  );
  const policy = compilePolicy(parsePolicyText(task.policyText, 'aggregator-bench.yaml'));
  const redis = await openUsageStore(task.redisUrl, { keyPrefix: task.keyPrefix });
  const { store, timings } = timedStore(redis);
  const before = memory();
  let aggregator: Aggregator | undefined = benchAggregator({
    kafka,
    store,
    policy,
    topics: topicNames(task.topicPrefix),
    groupId: task.groupId,
    partitionsConsumedConcurrently: PARTITIONS_CONCURRENTLY,
  });
  const { stats } = aggregator;
  let lastAt = 0;
  let crashes = 0;
  let stopped = false;
  let closed = false;
  const finish = finishLine(signal, DRAIN_TIMEOUT_MS, () => `the aggregator to commit ${task.expected} events (it has ${stats.committed})`);
  aggregator.on('batch', () => {
    if (stats.committed >= task.expected && lastAt === 0) {
      lastAt = performance.now();
      finish.done();
    }
  });
  aggregator.on('crash', () => crashes++);
  aggregator.on('fatal', (e: unknown) => finish.fail(new Error(`the aggregator stopped: ${e instanceof Error ? e.message : String(e)}`)));
  const progressTimer = reportProgress(() => stats.committed, clock);
  try {
    await startAggregator(aggregator);
    await finish.promise;
    const interval = clock.end();
    const after = memory();
    const committed = stats.committed;
    const agg: AggregatorFigures = {
      batches: stats.batches,
      storeRoundTrips: stats.storeRoundTrips,
      loads: timings.loads,
      applies: timings.applies,
      metaWrites: timings.metaWrites,
      loadMs: timings.loadMs,
      applyMs: timings.applyMs,
      counted: stats.counted,
      decisions: stats.decisions,
      breachRecords: stats.breachRecords,
      late: stats.late,
      dlq: stats.dlq,
      conflicts: stats.conflicts,
      skippedBelowFence: stats.skippedBelowFence,
      storeFailures: stats.storeFailures,
      consumed: stats.events,
      crashes,
    };
    // What its counters and tenants hold at the end: stop it, then free its per-partition state
    // (a private field, read here only) and compare; without that field, drop the whole Aggregator
    // (which then also counts what the Kafka client keeps after disconnecting).
    await aggregator.stop();
    stopped = true;
    await redis.close();
    closed = true;
    const held = memory();
    const partitions = (aggregator as unknown as { partitions?: unknown }).partitions;
    if (partitions instanceof Map) partitions.clear();
    else {
      aggregator.removeAllListeners();
      aggregator = undefined;
    }
    const dropped = memory();
    return {
      events: committed,
      ms: lastAt - clock.firstAt!,
      batches: agg.batches,
      before,
      after,
      retained: held.heap + held.arrayBuffers - (dropped.heap + dropped.arrayBuffers),
      ...interval,
      agg,
    };
  } finally {
    clearInterval(progressTimer);
    if (aggregator && !stopped) await aggregator.stop().catch((e) => logger('bench').warn('stopping the aggregator failed', { error: e }));
    if (!closed) await redis.close().catch(() => {});
  }
}
