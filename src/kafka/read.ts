/**
 * Reads a topic from its beginning to the end it had when the call started, under a throwaway
 * consumer group, and returns. For commands that fold a compacted or audit topic into a table.
 */
import { randomBytes } from 'node:crypto';
import type { Kafka, KafkaMessage } from 'kafkajs';
import { QuotaflowError } from '../errors.ts';

export interface ReadToEndOptions {
  timeoutMs?: number;
  /** A partition that delivers nothing for this long counts as read (its last records may have been compacted away). */
  quietMs?: number;
  groupPrefix?: string;
}

export async function readToEnd(kafka: Kafka, topic: string, onMessage: (message: KafkaMessage, partition: number) => void, opts: ReadToEndOptions = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const quietMs = opts.quietMs ?? 3_000;
  const admin = kafka.admin();
  await admin.connect();
  const ends = new Map<number, number>();
  try {
    for (const p of await admin.fetchTopicOffsets(topic)) if (Number(p.high) > Number(p.low)) ends.set(p.partition, Number(p.high) - 1);
  } finally {
    await admin.disconnect();
  }
  if (ends.size === 0) return;
  const last = new Map(ends); // where each partition ended at the start; records after it are not read
  const consumer = kafka.consumer({ groupId: `${opts.groupPrefix ?? 'quotaflow-reader'}-${randomBytes(6).toString('hex')}` });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      let quiet: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(timer);
        clearTimeout(quiet);
        resolve();
      };
      const timer = setTimeout(() => {
        clearTimeout(quiet);
        reject(new QuotaflowError('TIMEOUT', `could not read ${topic} to its end within ${timeoutMs / 1000} s`, { retriable: true, hint: 'check that Kafka is healthy, then try again' }));
      }, timeoutMs);
      const arm = () => {
        clearTimeout(quiet);
        quiet = setTimeout(done, quietMs);
      };
      consumer.on(consumer.events.GROUP_JOIN, arm);
      consumer.run({
        eachMessage: async ({ partition, message }) => {
          if (Number(message.offset) > (last.get(partition) ?? -1)) return;
          onMessage(message, partition);
          if (Number(message.offset) >= (ends.get(partition) ?? Infinity)) ends.delete(partition);
          if (ends.size === 0) done();
          else arm();
        },
      }).catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
}
