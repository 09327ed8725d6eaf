/**
 * Follows the compacted quota.decisions topic into a DecisionCache. Every gateway reads the whole
 * topic from the start under a consumer group of its own (nothing is committed), so a new or
 * restarted gateway rebuilds every live block before it calls itself warm, then keeps following.
 *
 * Warm = every partition has been read up to the end it had when the feed started. A partition whose
 * last records were compacted away never delivers its end offset, so a partition that delivers
 * nothing for `quietMs` after the group is joined also counts as read.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { Consumer, Kafka } from 'kafkajs';
import { DecisionSchema, type Decision } from '../events/index.ts';
import type { Logger } from '../log.ts';
import type { DecisionCache } from './decision-cache.ts';

export interface DecisionFeedOptions {
  kafka: Kafka;
  topic: string;
  cache: DecisionCache;
  clock: () => number;
  log: Logger;
  groupPrefix?: string;
  quietMs?: number;
}

export class DecisionFeed extends EventEmitter {
  private readonly consumer: Consumer;
  private warm = false;
  /** Offset each partition must reach to be read up to where it stood at start. */
  private readonly pending = new Map<number, number>();
  private quietTimer: NodeJS.Timeout | undefined;
  private readonly warmed: Promise<void>;
  private markWarm!: () => void;
  private stopped = false;
  invalid = 0;

  constructor(private readonly opts: DecisionFeedOptions) {
    super();
    this.consumer = opts.kafka.consumer({
      groupId: `${opts.groupPrefix ?? 'quotaflow-gateway'}-${randomBytes(6).toString('hex')}`,
      sessionTimeout: 10_000,
      heartbeatInterval: 3_000,
      // kafkajs restarts a crashed consumer on a timer, and a disconnect while that restart is still
      // joining does not stop it (tulios/kafkajs#1639): after a Kafka outage the stopped feed would
      // retry forever. So: no restart once stopped, and a restart that got through is stopped again.
      retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 300, maxRetryTime: 5_000, restartOnFailure: async () => !this.stopped },
    });
    this.consumer.on(this.consumer.events.FETCH_START, () => {
      if (this.stopped) void this.consumer.disconnect().catch(() => {});
    });
    this.warmed = new Promise((r) => (this.markWarm = r));
  }

  get isWarm(): boolean {
    return this.warm;
  }

  /** Resolves once the cache holds every block that was live when the feed started. */
  whenWarm(): Promise<void> {
    return this.warmed;
  }

  /** Connects and starts reading; resolves when the consumer runs (not when warm). */
  async start(): Promise<void> {
    const { kafka, topic } = this.opts;
    const admin = kafka.admin();
    await admin.connect();
    try {
      for (const p of await admin.fetchTopicOffsets(topic)) {
        const high = Number(p.high);
        if (high > Number(p.low)) this.pending.set(p.partition, high - 1);
      }
    } finally {
      await admin.disconnect().catch(() => {});
    }
    await this.consumer.connect();
    await this.consumer.subscribe({ topic, fromBeginning: true });
    this.consumer.on(this.consumer.events.GROUP_JOIN, () => this.armQuiet());
    this.consumer.on(this.consumer.events.CRASH, (e) => {
      this.opts.log.warn('the decision feed failed; kafkajs restarts it', { error: e.payload.error, restart: e.payload.restart });
    });
    await this.consumer.run({
      eachMessage: async ({ partition, message }) => {
        this.onRecord(message.key?.toString(), message.value);
        const target = this.pending.get(partition);
        if (target !== undefined && Number(message.offset) >= target) {
          this.pending.delete(partition);
          this.checkWarm();
        } else if (target !== undefined) {
          this.armQuiet();
        }
      },
    });
    this.checkWarm();
  }

  private onRecord(key: string | undefined, value: Buffer | null): void {
    if (!key || value === null || value.length === 0) return;
    let decision: Decision;
    try {
      const parsed = DecisionSchema.safeParse(JSON.parse(value.toString()));
      if (!parsed.success) throw parsed.error;
      decision = parsed.data;
    } catch (e) {
      this.invalid++;
      this.opts.log.warn('ignoring a record on the decisions topic that is not a decision', { key, error: e });
      return;
    }
    const now = this.opts.clock();
    const changed = this.opts.cache.apply(decision, now);
    this.emit('decision', decision, now, changed);
  }

  private armQuiet(): void {
    if (this.warm) return;
    clearTimeout(this.quietTimer);
    this.quietTimer = setTimeout(() => {
      if (this.pending.size > 0) this.opts.log.info('decision partitions delivered nothing more; calling the cache warm', { partitions: [...this.pending.keys()].join(',') });
      this.pending.clear();
      this.checkWarm();
    }, this.opts.quietMs ?? 2_000);
    this.quietTimer.unref();
  }

  private checkWarm(): void {
    if (this.warm || this.pending.size > 0) return;
    this.warm = true;
    clearTimeout(this.quietTimer);
    this.markWarm();
    this.emit('warm');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.quietTimer);
    await this.consumer.disconnect().catch(() => {});
  }
}
