/**
 * Follows the compacted quota.decisions topic into a DecisionCache. Every gateway reads the whole
 * topic from the start (nothing is committed), so a new or restarted gateway rebuilds every live
 * block before it calls itself warm, then keeps following. Warm = read up to where the topic stood
 * when the feed started (src/kafka/follow.ts says when that is).
 */
import { EventEmitter } from 'node:events';
import { DecisionSchema, type Decision } from '../events/index.ts';
import { follow, type Follower } from '../kafka/follow.ts';
import { READER_LABELS } from '../kafka/topics.ts';
import type { KafkaPort } from '../kafka/port.ts';
import type { Logger } from '../log.ts';
import type { DecisionCache } from './decision-cache.ts';

export interface DecisionFeedOptions {
  kafka: KafkaPort;
  topic: string;
  cache: DecisionCache;
  clock: () => number;
  log: Logger;
  quietMs?: number;
}

/** What a DecisionFeed emits, by name. */
export interface DecisionFeedEvents {
  /** A decision was folded into the cache at `appliedAt`; `changed` when the cache's answer changed. */
  decision: [decision: Decision, appliedAt: number, changed: boolean];
  warm: [];
}

export class DecisionFeed extends EventEmitter<DecisionFeedEvents> {
  private follower: Follower | undefined;
  private warm = false;
  private readonly warmed: Promise<void>;
  private markWarm!: () => void;
  invalid = 0;

  constructor(private readonly opts: DecisionFeedOptions) {
    super();
    this.warmed = new Promise((r) => (this.markWarm = r));
  }

  get isWarm(): boolean {
    return this.warm;
  }

  /** Resolves once the cache holds every block that was live when the feed started. */
  whenWarm(): Promise<void> {
    return this.warmed;
  }

  /** Connects and starts reading; resolves when reading runs (not when warm). */
  async start(): Promise<void> {
    this.follower = await follow(this.opts.kafka, this.opts.topic, (r) => this.onRecord(r.key?.toString(), r.value), {
      quietMs: this.opts.quietMs,
      label: READER_LABELS.decisions,
      onError: (error, restarting) => this.opts.log.warn('the decision feed failed; its reader restarts', { error, restarting }),
    });
    void this.follower.caughtUp.then(() => {
      this.warm = true;
      this.markWarm();
      this.emit('warm');
    });
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

  async stop(): Promise<void> {
    await this.follower?.stop();
  }
}
