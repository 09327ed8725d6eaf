/**
 * Reading a range of quota.usage for a replay: where each partition starts (by time, by offset, or
 * its beginning) and ends (a time, or the end it has when the replay starts), then every record in
 * between, partition by partition in offset order, under a throwaway consumer group.
 */
import { randomBytes } from 'node:crypto';
import type { Kafka } from 'kafkajs';
import { QuotaflowError } from '../errors.ts';

export type ReplayStart =
  | { kind: 'earliest' }
  | { kind: 'time'; at: number }
  /** Partitions not named are not read. */
  | { kind: 'offsets'; offsets: ReadonlyMap<number, number> };

/** Offsets [start, end) of one partition. */
export interface PartitionRange {
  partition: number;
  start: number;
  end: number;
}

export async function planRanges(kafka: Kafka, topic: string, from: ReplayStart, to?: number): Promise<PartitionRange[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const bounds = await admin.fetchTopicOffsets(topic);
    const low = new Map(bounds.map((b) => [b.partition, Number(b.low)]));
    const high = new Map(bounds.map((b) => [b.partition, Number(b.high)]));
    const byTime = async (at: number) => new Map((await admin.fetchTopicOffsetsByTimestamp(topic, at)).map((o) => [o.partition, Number(o.offset)]));

    let starts: Map<number, number>;
    if (from.kind === 'earliest') starts = new Map(low);
    else if (from.kind === 'time') starts = await byTime(from.at);
    else {
      const unknown = [...from.offsets.keys()].filter((p) => !high.has(p));
      if (unknown.length) {
        throw new QuotaflowError('USAGE', `${topic} has no partition ${unknown.join(', ')}`, { hint: `its partitions are 0 to ${high.size - 1}` });
      }
      starts = new Map(from.offsets);
    }
    const ends = to === undefined ? high : await byTime(to);
    const ranges: PartitionRange[] = [];
    for (const [partition, s] of starts) {
      // Records below the log start are gone (retention): start where the log starts.
      const start = Math.max(s, low.get(partition) ?? 0);
      const end = Math.min(ends.get(partition) ?? 0, high.get(partition) ?? 0);
      ranges.push({ partition, start, end: Math.max(start, end) });
    }
    return ranges.sort((a, b) => a.partition - b.partition);
  } finally {
    await admin.disconnect();
  }
}

export interface ReadProgress {
  read: number;
  total: number;
  elapsedMs: number;
}

export interface ReadOptions {
  signal?: AbortSignal;
  onProgress?: (p: ReadProgress) => void;
  progressEveryMs?: number;
  /** Fail when no record arrives for this long while some are still due (default 60 s). */
  stallMs?: number;
}

/**
 * Calls `onRecord` for every record in the ranges, each partition in offset order, and resolves
 * when all are read (`aborted` when the signal stopped it first).
 */
export async function readRanges(
  kafka: Kafka,
  topic: string,
  ranges: readonly PartitionRange[],
  onRecord: (partition: number, offset: number, value: Buffer | null) => void,
  opts: ReadOptions = {},
): Promise<{ read: number; aborted: boolean }> {
  const due = new Map(ranges.filter((r) => r.end > r.start).map((r) => [r.partition, r]));
  const total = [...due.values()].reduce((n, r) => n + (r.end - r.start), 0);
  const started = performance.now();
  let read = 0;
  if (due.size === 0) return { read, aborted: false };
  const consumer = kafka.consumer({ groupId: `quotaflow-replay-${randomBytes(6).toString('hex')}`, maxBytesPerPartition: 8 * 1024 * 1024 });
  const next = new Map([...due.values()].map((r) => [r.partition, r.start]));
  let lastProgress = 0;
  let lastRecordAt = performance.now();
  const report = (force = false) => {
    const now = performance.now();
    if (!opts.onProgress || (!force && now - lastProgress < (opts.progressEveryMs ?? 250))) return;
    lastProgress = now;
    opts.onProgress({ read, total, elapsedMs: now - started });
  };
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    const aborted = await new Promise<boolean>((resolve, reject) => {
      if (opts.signal?.aborted) return resolve(true);
      const settle = (done: () => void) => {
        clearInterval(stall);
        opts.signal?.removeEventListener('abort', abort);
        done();
      };
      const finish = (value: boolean) => settle(() => resolve(value));
      const abort = () => finish(true);
      opts.signal?.addEventListener('abort', abort, { once: true });
      const stall = setInterval(() => {
        if (performance.now() - lastRecordAt <= (opts.stallMs ?? 60_000)) return;
        settle(() => reject(new QuotaflowError('TIMEOUT', `no record of ${topic} arrived for ${Math.round((opts.stallMs ?? 60_000) / 1000)} s with ${total - read} still to read`, {
          retriable: true, hint: 'check that Kafka is healthy (`quotaflow topics describe`), then run the replay again',
        })));
      }, 1_000);
      consumer.run({
        autoCommit: false,
        eachBatch: async ({ batch, isRunning, isStale }) => {
          const p = batch.partition;
          const range = due.get(p);
          if (!range) return;
          for (const m of batch.messages) {
            if (!isRunning() || isStale() || opts.signal?.aborted) return;
            const offset = Number(m.offset);
            // Before the seek takes hold a fetch may start at the beginning: skip what is not due yet.
            if (offset < next.get(p)!) continue;
            if (offset >= range.end) {
              due.delete(p);
              break;
            }
            onRecord(p, offset, m.value);
            read++;
            next.set(p, offset + 1);
            if (offset + 1 === range.end) {
              due.delete(p);
              break;
            }
          }
          lastRecordAt = performance.now();
          report();
          if (due.size === 0) finish(false);
        },
      }).then(() => {
        for (const r of due.values()) consumer.seek({ topic, partition: r.partition, offset: String(r.start) });
      }, (e: unknown) => settle(() => reject(e)));
    });
    report(true);
    return { read, aborted };
  } finally {
    await consumer.disconnect();
  }
}
