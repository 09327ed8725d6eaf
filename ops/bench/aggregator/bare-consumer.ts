/**
 * The baseline: a bare consumer of the same client library the Aggregator uses in the run, through
 * the port's group consumer with the Aggregator's consumer settings. It only counts each batch's
 * records and commits the batch as the Aggregator does, so the ratio to it measures our fold, not
 * the client.
 */
import { kafkaPort } from '../../../src/kafka/client.ts';
import { memory } from '../common/memory.ts';
import { CONSUMER_SETTINGS, DRAIN_TIMEOUT_MS, DrainClock, finishLine, PARTITIONS_CONCURRENTLY, reportProgress } from './drain.ts';
import type { BaselineTask, DrainResult } from './tasks.ts';

export async function drainBareConsumer(task: BaselineTask, signal: AbortSignal): Promise<DrainResult> {
  const kafka = kafkaPort({ brokers: task.brokers, client: task.client, clientId: 'quotaflow-bench-baseline', minLogLevel: 'error' });
  const before = memory();
  const consumer = kafka.consumer({ groupId: task.groupId, ...CONSUMER_SETTINGS });
  const clock = new DrainClock();
  let count = 0;
  let batches = 0;
  let lastAt = 0;
  const finish = finishLine(signal, DRAIN_TIMEOUT_MS, () => `the bare consumer to drain ${task.expected} events (it has ${count})`);
  const progressTimer = reportProgress(() => count, clock);
  try {
    await consumer.run({
      topic: task.topic,
      fromBeginning: true,
      partitionsConcurrently: PARTITIONS_CONCURRENTLY,
      onBatch: async (batch) => {
        clock.start();
        await batch.commit(batch.records[batch.records.length - 1]!.offset + 1);
        await batch.heartbeat();
        count += batch.records.length;
        batches++;
        if (count >= task.expected && lastAt === 0) {
          lastAt = performance.now();
          finish.done();
        }
      },
      onError: (e, restarting) => {
        if (!restarting) finish.fail(new Error(`the bare consumer stopped: ${e instanceof Error ? e.message : String(e)}`));
      },
    });
    await finish.promise;
    const interval = clock.end();
    const after = memory();
    return { events: count, ms: lastAt - clock.firstAt!, batches, before, after, ...interval };
  } finally {
    clearInterval(progressTimer);
    await consumer.stop().catch(() => {});
  }
}
