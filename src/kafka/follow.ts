/**
 * Reading a compacted topic (decisions, overrides) or an audit trail: from the beginning up to the
 * end it had when reading started ("caught up"), and then, for a follower, on as it grows. One
 * implementation on the port's reader for the decision feed, the overrides feed and the commands
 * that fold a topic into a table.
 *
 * Caught up = every partition has delivered the last offset it had at the start. A partition whose
 * last records were compacted away never delivers that offset, so a partition that delivers nothing
 * for `quietMs` once reading has started also counts as read.
 */
import { QuotaflowError } from '../errors.ts';
import type { IncomingRecord, KafkaPort, PartitionOffsets } from './port.ts';

export interface FollowOptions {
  /** Names the reader where the client shows one. */
  label?: string;
  /** How long a partition may stay silent before it counts as read (default 2 s). */
  quietMs?: number;
  /** Deliver nothing past the end the topic had at the start (for a one-off read). */
  upToStart?: boolean;
  /** A failure the reader recovers from itself (`restarting`) or one that stopped it. */
  onError?(error: unknown, restarting: boolean): void;
  maxBytesPerPartition?: number;
}

export interface Follower {
  /** Resolves once every partition has delivered what it had at the start. */
  readonly caughtUp: Promise<void>;
  readonly isCaughtUp: boolean;
  stop(): Promise<void>;
}

/** Starts reading `topic` from its beginning; resolves once reading runs (rejects if Kafka cannot be reached). */
export async function follow(
  kafka: KafkaPort,
  topic: string,
  onRecord: (record: IncomingRecord, partition: number) => void,
  opts: FollowOptions = {},
): Promise<Follower> {
  const admin = kafka.admin();
  await admin.connect();
  let bounds: PartitionOffsets[];
  try {
    bounds = await settled(() => admin.offsets(topic));
  } finally {
    await admin.disconnect().catch(() => {});
  }
  /** Offset each partition must deliver to be read up to where it stood at start. */
  const pending = new Map(bounds.filter((b) => b.high > b.low).map((b) => [b.partition, b.high - 1]));
  const last = new Map(bounds.map((b) => [b.partition, b.high - 1]));
  let caught = false;
  let markCaughtUp!: () => void;
  const caughtUp = new Promise<void>((r) => (markCaughtUp = r));
  let quiet: NodeJS.Timeout | undefined;
  const check = () => {
    if (caught || pending.size > 0) return;
    caught = true;
    clearTimeout(quiet);
    markCaughtUp();
  };
  const armQuiet = () => {
    if (caught) return;
    clearTimeout(quiet);
    quiet = setTimeout(() => {
      pending.clear();
      check();
    }, opts.quietMs ?? 2_000);
    quiet.unref();
  };

  const reader = kafka.read(
    topic,
    new Map(bounds.map((b) => [b.partition, b.low])),
    (partition, records) => {
      for (const r of records) {
        if (opts.upToStart && r.offset > (last.get(partition) ?? -1)) break;
        onRecord(r, partition);
      }
      const target = pending.get(partition);
      if (target === undefined) return;
      if (records[records.length - 1]!.offset >= target) {
        pending.delete(partition);
        check();
      } else armQuiet();
    },
    {
      label: opts.label,
      maxBytesPerPartition: opts.maxBytesPerPartition,
      onError: (e, restarting) => {
        opts.onError?.(e, restarting);
        if (restarting) armQuiet();
      },
    },
  );
  await reader.started;
  armQuiet();
  check();
  return {
    caughtUp,
    get isCaughtUp() {
      return caught;
    },
    stop: async () => {
      clearTimeout(quiet);
      await reader.stop();
    },
  };
}

/**
 * A topic created a moment ago can have leaders in its metadata that do not serve it yet ("not the
 * leader for that partition"): ask again for a few seconds before calling it a failure.
 */
async function settled<T>(call: () => Promise<T>, withinMs = 10_000): Promise<T> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    try {
      return await call();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

export interface ReadToEndOptions {
  timeoutMs?: number;
  quietMs?: number;
  label?: string;
}

/** Reads a topic from its beginning to the end it had when the call started, and returns. */
export async function readToEnd(
  kafka: KafkaPort,
  topic: string,
  onRecord: (record: IncomingRecord, partition: number) => void,
  opts: ReadToEndOptions = {},
): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const follower = await follow(kafka, topic, onRecord, { upToStart: true, quietMs: opts.quietMs ?? 3_000, label: opts.label });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      follower.caughtUp,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new QuotaflowError('TIMEOUT', `could not read ${topic} to its end within ${timeoutMs / 1000} s`, {
                retriable: true,
                hint: 'check that Kafka is healthy, then try again',
              }),
            ),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    await follower.stop();
  }
}
