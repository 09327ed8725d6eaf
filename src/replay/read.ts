/**
 * Reading a range of quota.usage for a replay: where each partition starts (by time, by offset, or
 * its beginning) and ends (a time, or the end it has when the replay starts), then every record in
 * between, partition by partition in offset order, through the Kafka port's reader.
 */
import { QuotaflowError } from '../errors.ts';
import type { IncomingRecord, KafkaPort } from '../kafka/port.ts';
import { READER_LABELS } from '../kafka/topics.ts';

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

export async function planRanges(kafka: KafkaPort, topic: string, from: ReplayStart, to?: number): Promise<PartitionRange[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const bounds = await admin.offsets(topic);
    const low = new Map(bounds.map((b) => [b.partition, b.low]));
    const high = new Map(bounds.map((b) => [b.partition, b.high]));
    const byTime = async (at: number) => new Map((await admin.offsetsAt(topic, at)).map((o) => [o.partition, o.offset]));

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
 * Hands over every record in the ranges, each partition's in offset order and in batches, and
 * resolves when all are read (`aborted` when the signal stopped it first).
 */
export async function readRanges(
  kafka: KafkaPort,
  topic: string,
  ranges: readonly PartitionRange[],
  /** May return a promise: reading waits for it (a consumer that is behind). */
  onRecords: (partition: number, records: readonly IncomingRecord[]) => Promise<void> | undefined,
  opts: ReadOptions = {},
): Promise<{ read: number; aborted: boolean }> {
  const due = new Map(ranges.filter((r) => r.end > r.start).map((r) => [r.partition, r]));
  const total = [...due.values()].reduce((n, r) => n + (r.end - r.start), 0);
  const started = performance.now();
  let read = 0;
  if (due.size === 0) return { read, aborted: false };
  let lastProgress = 0;
  let lastRecordAt = performance.now();
  const report = (force = false) => {
    const now = performance.now();
    if (!opts.onProgress || (!force && now - lastProgress < (opts.progressEveryMs ?? 250))) return;
    lastProgress = now;
    opts.onProgress({ read, total, elapsedMs: now - started });
  };
  let settle!: (outcome: { aborted: boolean } | { error: unknown }) => void;
  const outcome = new Promise<{ aborted: boolean } | { error: unknown }>((r) => (settle = r));
  const reader = kafka.read(
    topic,
    new Map([...due.values()].map((r) => [r.partition, r.start])),
    async (p, records) => {
      const range = due.get(p);
      if (!range || opts.signal?.aborted) return;
      let n = records.length;
      while (n > 0 && records[n - 1]!.offset >= range.end) n--;
      if (n > 0) {
        const wait = onRecords(p, n === records.length ? records : records.slice(0, n));
        read += n;
        if (wait) await wait;
      }
      if (n < records.length || records[n - 1]!.offset + 1 >= range.end) due.delete(p);
      lastRecordAt = performance.now();
      report();
      if (due.size === 0) settle({ aborted: false });
    },
    { label: READER_LABELS.replay, maxBytesPerPartition: 8 * 1024 * 1024, onError: (error, restarting) => restarting || settle({ error }) },
  );
  const abort = () => settle({ aborted: true });
  opts.signal?.addEventListener('abort', abort, { once: true });
  if (opts.signal?.aborted) abort();
  const stall = setInterval(() => {
    if (performance.now() - lastRecordAt <= (opts.stallMs ?? 60_000)) return;
    settle({
      error: new QuotaflowError(
        'TIMEOUT',
        `no record of ${topic} arrived for ${Math.round((opts.stallMs ?? 60_000) / 1000)} s with ${total - read} still to read`,
        {
          retriable: true,
          hint: 'check that Kafka is healthy (`quotaflow topics describe`), then run the replay again',
        },
      ),
    });
  }, 1_000);
  reader.started.catch((error: unknown) => settle({ error }));
  try {
    const result = await outcome;
    if ('error' in result) throw result.error;
    report(true);
    return { read, aborted: result.aborted };
  } finally {
    clearInterval(stall);
    opts.signal?.removeEventListener('abort', abort);
    await reader.stop();
  }
}
