/**
 * Usage events from a gateway to quota.usage: batched, keyed by tenant (so all of a tenant's counters
 * land on one partition), through an idempotent producer with acks=all and gzip.
 *
 * `enqueue` never waits and never throws: a slow or absent Kafka must not hold up requests. Events wait
 * in a bounded buffer; past `maxBuffered` new events are dropped, counted in `stats.dropped`, logged
 * (at most once per 10 s) and exported as a metric — never silently. While Kafka is away the sender
 * retries with backoff from 200 ms to 5 s and keeps everything buffered, so an outage shorter than the
 * buffer loses nothing. One send is in flight at a time: an idempotent producer numbers its batches
 * and concurrent sends break that numbering (kafkajs's does).
 *
 * Optional coalescing folds identical events (same tenant, subjects, route, outcome) waiting in the
 * same batch into one event with a summed cost, dated at the first of them.
 */
import { EventEmitter } from 'node:events';
import { MAX_EVENT_COST, type UsageEvent } from '../events/index.ts';
import type { KafkaPort, OutgoingRecord, Producer } from '../kafka/port.ts';
import { logger, type Logger } from '../log.ts';

export interface EmitterOptions {
  kafka: KafkaPort;
  topic: string;
  /** Events held while Kafka is slow or away; past this, new events are dropped and counted. Default 100,000. */
  maxBuffered?: number;
  /** How long an event may wait for others to share its request (ms). Default 10. */
  lingerMs?: number;
  /** Events per produce request at most. Default 2,000. */
  maxBatch?: number;
  coalesce?: boolean;
  log?: Logger;
}

/** In requests (an event's cost), so coalesced events count as the requests they stand for. */
export interface EmitterStats {
  enqueued: number;
  sent: number;
  dropped: number;
  coalesced: number;
  sendFailures: number;
}

interface Pending {
  key: string;
  event: UsageEvent;
  headers: Record<string, string> | undefined;
  coalesceKey: string | undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What an Emitter emits, by name. */
export interface EmitterEvents {
  /** An event was dropped: the buffer was full. */
  drop: [event: UsageEvent];
  /** Kafka acknowledged a send of this many requests. */
  sent: [requests: number];
  'send-failure': [error: unknown];
}

export class Emitter extends EventEmitter<EmitterEvents> {
  readonly stats: EmitterStats = { enqueued: 0, sent: 0, dropped: 0, coalesced: 0, sendFailures: 0 };
  private queue: Pending[] = [];
  private head = 0;
  /** Coalescing index over the queue's unsent tail. */
  private readonly byKey = new Map<string, Pending>();
  private producer: Producer | undefined;
  private connected = false;
  private running = false;
  private stopping = false;
  private pump: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private lastDropLog = 0;
  private readonly maxBuffered: number;
  private readonly lingerMs: number;
  private readonly maxBatch: number;
  private readonly log: Logger;

  constructor(private readonly opts: EmitterOptions) {
    super();
    this.maxBuffered = opts.maxBuffered ?? 100_000;
    this.lingerMs = opts.lingerMs ?? 10;
    this.maxBatch = opts.maxBatch ?? 2_000;
    this.log = opts.log ?? logger('emitter');
  }

  /** Events waiting to be sent. */
  get buffered(): number {
    return this.queue.length - this.head;
  }

  /** True once a send has succeeded since the last failure. */
  get healthy(): boolean {
    return this.connected;
  }

  /** Queues one event; false when the buffer is full and the event was dropped (counted). */
  enqueue(tenantKey: string, event: UsageEvent, headers?: Record<string, string>): boolean {
    let coalesceKey: string | undefined;
    if (this.opts.coalesce) {
      coalesceKey = `${tenantKey}\u0000${event.api}\u0000${event.method}\u0000${event.path}\u0000${JSON.stringify(event.subjects)}\u0000${JSON.stringify(event.outcome)}\u0000${event.policyVersion}`;
      const same = this.byKey.get(coalesceKey);
      if (same !== undefined && event.requestId === undefined && same.event.requestId === undefined && same.event.cost + event.cost <= MAX_EVENT_COST) {
        same.event.cost += event.cost;
        this.stats.enqueued += event.cost;
        this.stats.coalesced++;
        return true;
      }
    }
    if (this.buffered >= this.maxBuffered) {
      this.stats.dropped += event.cost;
      const now = Date.now();
      if (now - this.lastDropLog > 10_000) {
        this.lastDropLog = now;
        this.log.error('usage buffer full: dropping events until Kafka takes them', {
          buffered: this.buffered,
          dropped: this.stats.dropped,
          hint: 'check that Kafka is reachable; raise the buffer bound if outages are expected to last longer',
        });
      }
      this.emit('drop', event);
      return false;
    }
    const p: Pending = { key: tenantKey, event, headers, coalesceKey };
    this.queue.push(p);
    if (coalesceKey !== undefined) this.byKey.set(coalesceKey, p);
    this.stats.enqueued += event.cost;
    // Wake an idle sender on the first event, so its linger starts now: otherwise the idle poll
    // (up to lingerMs) and then the linger itself would let an event wait up to twice lingerMs.
    if (this.wake && (this.buffered === 1 || this.buffered >= this.maxBatch)) this.wake();
    return true;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.pump = this.run();
  }

  /** Sends what is buffered (waiting up to `timeoutMs` for Kafka), then disconnects. */
  async stop(timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    this.stopping = true; // no more lingering: send what is buffered now
    this.wake?.();
    while (this.buffered > 0 && this.running && Date.now() < deadline) await sleep(10);
    this.running = false;
    this.wake?.();
    await this.pump;
    if (this.buffered > 0) this.log.warn('stopped with usage events still buffered: they are lost', { buffered: this.buffered });
    await this.producer?.disconnect().catch(() => {});
  }

  private async ensureProducer(): Promise<Producer> {
    if (this.producer && this.connected) return this.producer;
    await this.producer?.disconnect().catch(() => {});
    // A fresh producer after a failure: the old one's sequence numbers may not match the broker's any more.
    this.producer = this.opts.kafka.producer({ idempotent: true, retries: 3, initialRetryMs: 100, maxRetryMs: 1_000 });
    await this.producer.connect();
    this.connected = true;
    return this.producer;
  }

  /** Waits `ms`, or less if `wake` is called (a first event, a full batch, stop). */
  private nap(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done(): void {
        clearTimeout(timer);
        if (self.wake === done) self.wake = undefined;
        resolve();
      }
      this.wake = done;
    });
  }

  private async run(): Promise<void> {
    let backoff = 200;
    while (this.running) {
      if (this.buffered === 0) {
        await this.nap(this.lingerMs);
        continue;
      }
      if (this.buffered < this.maxBatch && !this.stopping) await this.nap(this.lingerMs);
      const end = Math.min(this.queue.length, this.head + this.maxBatch);
      const batch = this.queue.slice(this.head, end);
      // Events in this batch may no longer absorb later identical ones: they are on their way.
      for (const p of batch) if (p.coalesceKey !== undefined && this.byKey.get(p.coalesceKey) === p) this.byKey.delete(p.coalesceKey);
      const topic = this.opts.topic;
      const records: OutgoingRecord[] = batch.map((p) => ({ topic, key: p.key, value: JSON.stringify(p.event), headers: p.headers }));
      try {
        const producer = await this.ensureProducer();
        await producer.send(records, { compression: 'gzip' });
        this.head = end;
        if (this.head > 4_096 && this.head * 2 > this.queue.length) {
          this.queue = this.queue.slice(this.head);
          this.head = 0;
        }
        let sent = 0;
        for (const p of batch) sent += p.event.cost;
        this.stats.sent += sent;
        if (backoff > 200) this.log.info('Kafka takes usage events again', { buffered: this.buffered });
        backoff = 200;
        this.emit('sent', sent);
      } catch (e) {
        this.connected = false;
        this.stats.sendFailures++;
        this.log.warn('sending usage events failed; keeping them buffered and retrying', { error: e, buffered: this.buffered, retryInMs: backoff });
        this.emit('send-failure', e);
        await sleep(backoff);
        backoff = Math.min(5_000, backoff * 2);
      }
    }
  }
}
