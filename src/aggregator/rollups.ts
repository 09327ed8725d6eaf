/**
 * The aggregator's rollups (DESIGN §5): the region's own absolute total of every bucket it changed,
 * published to quota.rollup at most every `everyMs`, for MirrorMaker 2 to carry to the other regions.
 *
 * What is published and when:
 *  - a bucket is marked once the store write that changed it succeeded (never a count the store
 *    does not hold), and every live bucket of a counter loaded from the store is marked too, so a new
 *    owner after a rebalance or a crash publishes what its predecessor may not have;
 *  - a flush reads each marked bucket's total from memory, partition by partition, skipping a
 *    partition whose batch is in flight (its memory may be ahead of the store), and sends them as one
 *    record per bucket (key `bucketMs:bucketIndex:counterKey`, so compaction keeps the newest);
 *  - a flush that fails marks its buckets again for the next one. A bucket that left its ring before
 *    a flush counts in no window any more: it is dropped.
 * Totals are absolute, so a record sent twice or late is harmless: readers keep the largest.
 */
import { encodeRollup, rollupKey, ROLLUP_SCHEMA_VERSION, type Rollup } from '../events/rollup.ts';
import type { CounterState } from '../fold/counter-state.ts';
import type { OutgoingRecord, Producer } from '../kafka/port.ts';
import type { Logger } from '../log.ts';

/** Default flush interval: well under a second, so a remote region lags by little more than the mirror. */
export const DEFAULT_ROLLUP_EVERY_MS = 250;

/** Records per produce request (a rollup is ~250 B). */
const RECORDS_PER_SEND = 2_000;

interface Marked {
  cs: CounterState;
  bucketMs: number;
  bucketIndex: number;
}

export interface RollupPublisherOptions {
  producer: Producer;
  topic: string;
  region: string;
  everyMs?: number;
  /** A partition whose batch is in flight: its buckets wait for the next flush. */
  busy: (partition: number) => boolean;
  clock: () => number;
  log: Logger;
  /** Called with the records of each produce request that succeeded. */
  onSent?: (records: number) => void;
}

export class RollupPublisher {
  /** Per partition: marked buckets by rollup key. */
  private readonly marked = new Map<number, Map<string, Marked>>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> = Promise.resolve();
  private inFlight = false;
  private failures = 0;
  /** Rollup records sent. */
  sent = 0;

  constructor(private readonly opts: RollupPublisherOptions) {}

  get everyMs(): number {
    return this.opts.everyMs ?? DEFAULT_ROLLUP_EVERY_MS;
  }

  /** Buckets marked and not yet sent. */
  get pending(): number {
    let n = 0;
    for (const m of this.marked.values()) n += m.size;
    return n;
  }

  start(): void {
    // A flush still sending (Kafka slow or down: the producer retries) is not queued behind.
    this.timer = setInterval(() => {
      if (!this.inFlight) void this.flush();
    }, this.everyMs);
    this.timer.unref();
  }

  /** Stops the timer and sends what is marked (partitions in flight included: the caller has drained them). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flush({ all: true });
  }

  mark(partition: number, cs: CounterState, bucketMs: number, bucketIndex: number): void {
    let m = this.marked.get(partition);
    if (!m) this.marked.set(partition, (m = new Map()));
    const key = rollupKey({ counterKey: cs.counterKey, bucketMs, bucketIndex });
    const held = m.get(key);
    // The newest CounterState of the key wins: after a reload the old one is stale memory.
    if (held) held.cs = cs;
    else m.set(key, { cs, bucketMs, bucketIndex });
  }

  /** Every bucket the counter holds (a counter loaded from the store). */
  markCounter(partition: number, cs: CounterState): void {
    const seen = new Set<number>();
    for (const { window } of cs.windows) {
      if (seen.has(window.bucketMs)) continue;
      seen.add(window.bucketMs);
      for (const bucketIndex of cs.counter.buckets(window).keys()) this.mark(partition, cs, window.bucketMs, bucketIndex);
    }
  }

  /** Sends every marked bucket's total; one flush at a time. */
  flush(opts: { all?: boolean } = {}): Promise<void> {
    const next = this.flushing.then(async () => {
      this.inFlight = true;
      try {
        await this.send(opts.all ?? false);
      } finally {
        this.inFlight = false;
      }
    });
    this.flushing = next.catch(() => {});
    return next;
  }

  private async send(all: boolean): Promise<void> {
    const taken: Array<[number, string, Marked]> = [];
    const records: OutgoingRecord[] = [];
    const at = this.opts.clock();
    for (const [partition, m] of this.marked) {
      if (!all && this.opts.busy(partition)) continue;
      for (const [key, b] of m) {
        m.delete(key);
        const total = b.cs.counter.bucketTotal(b.bucketMs, b.bucketIndex);
        if (total === undefined) continue; // out of its ring: it counts nowhere any more
        const rollup: Rollup = {
          schemaVersion: ROLLUP_SCHEMA_VERSION,
          region: this.opts.region,
          counterKey: b.cs.counterKey,
          tenant: b.cs.tenantKey,
          bucketMs: b.bucketMs,
          bucketIndex: b.bucketIndex,
          total,
          publishedAt: at,
        };
        taken.push([partition, key, b]);
        records.push({ topic: this.opts.topic, key, value: encodeRollup(rollup) });
      }
    }
    for (let i = 0; i < records.length; i += RECORDS_PER_SEND) {
      const chunk = records.slice(i, i + RECORDS_PER_SEND);
      try {
        await this.opts.producer.send(chunk);
      } catch (error) {
        // Marked again (unless marked anew meanwhile): the next flush sends their totals then.
        for (const [partition, key, b] of taken.slice(i)) {
          let m = this.marked.get(partition);
          if (!m) this.marked.set(partition, (m = new Map()));
          if (!m.has(key)) m.set(key, b);
        }
        this.failures++;
        this.opts.log.warn('publishing rollups failed; they are sent again with the next flush', {
          error,
          buckets: records.length - i,
          failures: this.failures,
        });
        return;
      }
      this.sent += chunk.length;
      this.opts.onSent?.(chunk.length);
    }
    this.failures = 0;
  }
}
