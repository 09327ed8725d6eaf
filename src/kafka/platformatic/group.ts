/**
 * The port's group consumer on @platformatic/kafka: the library delivers a stream of single
 * messages; this turns it into per-partition batches, one batch of a partition at a time, up to
 * `partitionsConcurrently` partitions at once, committed when the handler says so.
 *
 * Order is what effectively-once rests on (a fence skips every offset at or below it), so on every
 * rebalance the stream is replaced by a new one that starts from the committed offsets: messages
 * still buffered or in flight from before the rebalance belong to the old stream and are dropped,
 * never handed over out of order. A batch that fails, or a stream that fails, is handled the same
 * way after a pause: the partitions start again from their last commit (the fences skip what was
 * already applied).
 */
import type { Consumer as LibConsumer, Message as LibMessage, MessagesStream } from '@platformatic/kafka';
import type { GroupConsumer, GroupConsumerOptions, GroupRunOptions, IncomingRecord, KafkaSettings, PartitionBatch } from '../port.ts';
import { baseOptions, closeConsumer, lib, toIncoming } from './lib.ts';

type Msg = LibMessage<Buffer, Buffer, Buffer, Buffer>;

/** Records of one partition handed over at most per batch (about a kafkajs fetch's worth). */
const MAX_BATCH = 10_000;
/** Buffered records past which the stream pauses until the handlers catch up. */
const PAUSE_ABOVE = 50_000;
const RESTART_BACKOFF_MS = [200, 500, 1_000, 2_000, 5_000];

interface Queue {
  records: IncomingRecord[];
  /** The last message queued: committing it commits everything before it, with its leader epoch. */
  last: Msg | undefined;
  busy: boolean;
}

export class PlatformaticGroupConsumer implements GroupConsumer {
  private consumer: LibConsumer<Buffer, Buffer, Buffer, Buffer> | undefined;
  private stream: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined;
  /** Bumped when the stream is replaced: batches of an older one are no longer active. */
  private epoch = 0;
  private readonly queues = new Map<number, Queue>();
  private buffered = 0;
  private active = 0;
  private inFlight = new Set<Promise<void>>();
  private stopping = false;
  private restarts = 0;
  private options!: GroupRunOptions;
  private scheduled = false;
  private replacing: Promise<void> | undefined;
  /** A rebalance came while a replacement was under way: replace once more after it. */
  private again = false;

  constructor(
    private readonly settings: KafkaSettings,
    private readonly opts: GroupConsumerOptions,
  ) {}

  async run(run: GroupRunOptions): Promise<void> {
    this.options = run;
    const { Consumer } = await lib();
    const session = this.opts.sessionTimeoutMs ?? 30_000;
    const consumer = new Consumer({
      ...baseOptions(this.settings),
      groupId: this.opts.groupId,
      sessionTimeout: session,
      heartbeatInterval: this.opts.heartbeatIntervalMs ?? Math.min(3_000, Math.floor(session / 3)),
      autocommit: false,
      ...(this.opts.maxBytesPerPartition === undefined ? {} : { maxBytesPerPartition: this.opts.maxBytesPerPartition }),
    });
    this.consumer = consumer;
    consumer.on('error', (e: unknown) => run.onError?.(e, !this.stopping));
    consumer.on('consumer:group:join', (payload) => {
      const mine = payload.assignments?.find((a) => a.topic === run.topic)?.partitions ?? [];
      run.onAssigned?.([...mine]);
      // The first join comes before the first stream; every later one is a rebalance.
      if (!this.stream || this.stopping) return;
      if (this.replacing) this.again = true;
      else void this.replaceStream();
    });
    this.stream = await this.openStream();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.epoch++;
    await this.replacing;
    await Promise.allSettled([...this.inFlight]);
    await this.stream?.close().catch(() => {});
    await closeConsumer(this.consumer);
  }

  private async openStream(): Promise<MessagesStream<Buffer, Buffer, Buffer, Buffer>> {
    const consumer = this.consumer!;
    const epoch = ++this.epoch;
    this.queues.clear();
    this.buffered = 0;
    const stream = await consumer.consume({
      topics: [this.options.topic],
      mode: 'committed',
      fallbackMode: this.options.fromBeginning ? 'earliest' : 'latest',
      autocommit: false,
      ...(this.opts.maxBytesPerPartition === undefined ? {} : { maxBytesPerPartition: this.opts.maxBytesPerPartition }),
    });
    stream.on('data', (m: Msg) => {
      if (epoch === this.epoch) this.enqueue(m);
    });
    stream.on('error', (e: unknown) => {
      if (epoch !== this.epoch || this.stopping) return;
      this.options.onError?.(e, true);
      void this.replaceStream(true);
    });
    return stream;
  }

  /**
   * A new stream from the committed offsets; the old one's messages are dropped. The new stream is
   * opened before the old one closes: closing the last stream of a topic would leave the group.
   */
  private replaceStream(afterFailure = false): Promise<void> {
    this.replacing ??= (async () => {
      try {
        if (afterFailure) await new Promise((r) => setTimeout(r, RESTART_BACKOFF_MS[Math.min(this.restarts++, RESTART_BACKOFF_MS.length - 1)]));
        if (this.stopping) return;
        const old = this.stream;
        for (;;) {
          try {
            this.stream = await this.openStream();
            break;
          } catch (e) {
            if (this.stopping) return;
            this.options.onError?.(e, true);
            await new Promise((r) => setTimeout(r, RESTART_BACKOFF_MS[Math.min(this.restarts++, RESTART_BACKOFF_MS.length - 1)]));
          }
        }
        await old?.close().catch(() => {});
      } finally {
        this.replacing = undefined;
      }
      if (this.again && !this.stopping) {
        this.again = false;
        await this.replaceStream();
      }
    })();
    return this.replacing;
  }

  private enqueue(m: Msg): void {
    let q = this.queues.get(m.partition);
    if (!q) this.queues.set(m.partition, (q = { records: [], last: undefined, busy: false }));
    q.records.push(toIncoming(m));
    q.last = m;
    if (++this.buffered > PAUSE_ABOVE && !this.stream?.isPaused()) this.stream?.pause();
    this.schedule();
  }

  /** After the messages of one fetch are all queued: start what may start. */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.dispatch();
    });
  }

  private dispatch(): void {
    for (const [partition, q] of this.queues) {
      if (this.active >= this.options.partitionsConcurrently || this.stopping) return;
      if (q.busy || q.records.length === 0) continue;
      const records = q.records.length > MAX_BATCH ? q.records.splice(0, MAX_BATCH) : q.records.splice(0);
      const last = q.records.length === 0 ? q.last : undefined;
      q.busy = true;
      this.active++;
      this.buffered -= records.length;
      if (this.buffered < PAUSE_ABOVE / 2 && this.stream?.isPaused()) this.stream.resume();
      const done = this.handle(partition, records, last).finally(() => {
        q.busy = false;
        this.active--;
        this.inFlight.delete(done);
        this.dispatch();
      });
      this.inFlight.add(done);
    }
  }

  private async handle(partition: number, records: IncomingRecord[], last: Msg | undefined): Promise<void> {
    const epoch = this.epoch;
    const consumer = this.consumer!;
    const batch: PartitionBatch = {
      topic: this.options.topic,
      partition,
      records,
      // The library's messages do not carry the partition's end: the batch's end stands for it.
      highWatermark: records[records.length - 1]!.offset + 1,
      heartbeat: async () => {},
      isActive: () => epoch === this.epoch && !this.stopping && consumer.isActive(),
      commit: async (next) => {
        // The last message's own commit carries its leader epoch; any other offset goes without one.
        if (last !== undefined && next === Number(last.offset) + 1) await last.commit();
        else await consumer.commit({ offsets: [{ topic: this.options.topic, partition, offset: BigInt(next), leaderEpoch: -1 }] });
      },
    };
    try {
      await this.options.onBatch(batch);
      this.restarts = 0;
    } catch (e) {
      if (epoch !== this.epoch || this.stopping) return; // that stream is gone already
      this.options.onError?.(e, true);
      // As kafkajs does after a failed batch: start again from the last commit.
      await this.replaceStream(true);
    }
  }
}
