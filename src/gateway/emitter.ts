/**
 * Usage events from a gateway to quota.usage, through an idempotent producer with acks=all and gzip.
 *
 * Events are packed into usage batch records (src/events/batch.ts): each send takes up to
 * `maxBatch` waiting events and puts those bound for one partition into one record, on the
 * partition a record keyed by each event's tenant would go to (Java's murmur2 partitioner), so a
 * tenant's events still land on one partition and one aggregator. Kafka's per-record work is then
 * paid per batch rather than per request. With `batchRecords: false` each event is a record of its
 * own, keyed by tenant, as for an aggregator older than batches. A traced request's event is a
 * record of its own either way, with its W3C trace context in the headers.
 *
 * Identical events (same tenant, subjects, API, method, path, outcome and policy version, no request
 * id, no trace context) that wait in the buffer within one time slice are coalesced into one event whose cost is their
 * sum, dated at the last of them. The slice (`coalesceSliceMs`) divides every bucket of the policy,
 * so the requests of a coalesced event fall into the same bucket of every window: counts stay exact.
 * The last, not the first: a `near` snapshot the event causes is dated at its event time, and the
 * gateway charges what it admitted after that date to its share (decision-cache.ts); dated at the
 * first, the requests after it would be in the snapshot's count and charged again.
 *
 * `enqueue` never waits and never throws: a slow or absent Kafka must not hold up requests. Events wait
 * in a bounded buffer; past `maxBuffered` new events are dropped, counted in `stats.dropped`, logged
 * (at most once per 10 s) and exported as a metric — never silently. While Kafka is away the sender
 * retries with backoff from 200 ms to 5 s and keeps everything buffered, so an outage shorter than the
 * buffer loses nothing. One send is in flight at a time: an idempotent producer numbers its batches
 * and concurrent sends break that numbering (kafkajs's does). An `urgent` event (one that takes a key
 * near its limit) cuts the linger short, so the decision it may cause does not wait for it.
 */
import { EventEmitter } from 'node:events';
import { batchHeaderOf, encodeBatch, MAX_BATCH_EVENTS } from '../events/batch.ts';
import { MAX_EVENT_COST, type UsageEvent } from '../events/index.ts';
import { javaPartition } from '../kafka/partition.ts';
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
  /** Coalesce identical waiting events (default true). */
  coalesce?: boolean;
  /**
   * Events coalesce only within one slice of this many ms (slices start at multiples of it). It must
   * divide every bucket size the events are counted in; the gateway passes the greatest common
   * divisor of its policy's. Default 1,000.
   */
  coalesceSliceMs?: number;
  /** Pack events into usage batch records (default true); false: one record per event, keyed by tenant. */
  batchRecords?: boolean;
  /** How often the topic's partition count is read again (ms, default 60,000). */
  metadataRefreshMs?: number;
  log?: Logger;
}

/** In requests (an event's cost), so coalesced events count as the requests they stand for. */
export interface EmitterStats {
  enqueued: number;
  sent: number;
  dropped: number;
  /** Events merged into an earlier identical one. */
  coalesced: number;
  /** Usage events sent (after coalescing) and the Kafka records and bytes (before compression) that carried them. */
  events: number;
  records: number;
  bytes: number;
  sendFailures: number;
}

interface Pending {
  key: string;
  event: UsageEvent;
  headers: Record<string, string> | undefined;
  /** Where the coalescing index holds it; undefined for an event that never coalesces. */
  group: string | CoalesceSlot | undefined;
}

/**
 * A group's coalescing candidates, kept by the caller next to what it already holds for the group
 * (the gateway: its own count of the counter), so that enqueue finds them without a Map lookup.
 * Opaque to the caller; a new slot for a group only means its older candidates are not found.
 */
export class CoalesceSlot {
  /** @internal The group's newest unsent events (at most GROUP_CANDIDATES). */
  readonly newest: Pending[] = [];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The newest events of a group that a new one is compared with: enough for requests that alternate
 * (two users under one organization's counter), and a bound on the work per event however many of
 * a group wait (in an outage, thousands).
 */
const GROUP_CANDIDATES = 4;

/** Tenant keys whose partition is remembered, at most (then the memo starts over). */
const MAX_PARTITION_MEMO = 100_000;

/** What an Emitter emits, by name. */
export interface EmitterEvents {
  /** An event was dropped: the buffer was full. */
  drop: [event: UsageEvent];
  /** Kafka acknowledged a send of this many requests. */
  sent: [requests: number];
  'send-failure': [error: unknown];
}

export class Emitter extends EventEmitter<EmitterEvents> {
  readonly stats: EmitterStats = { enqueued: 0, sent: 0, dropped: 0, coalesced: 0, events: 0, records: 0, bytes: 0, sendFailures: 0 };
  private queue: Pending[] = [];
  private head = 0;
  /** Coalescing index over the queue's unsent tail: per group, its newest events that may still absorb others. */
  private readonly byGroup = new Map<string, Pending[]>();
  private producer: Producer | undefined;
  private connected = false;
  private running = false;
  private stopping = false;
  private urgent = false;
  private pump: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private lastDropLog = 0;
  /** The usage topic's partition count, and when it was read. */
  private partitions = 0;
  private partitionsReadAt = -Infinity;
  private readonly partitionOf = new Map<string, number>();
  private readonly maxBuffered: number;
  private readonly lingerMs: number;
  private readonly maxBatch: number;
  private readonly coalesce: boolean;
  private readonly sliceMs: number;
  private readonly batchRecords: boolean;
  private readonly log: Logger;

  constructor(private readonly opts: EmitterOptions) {
    super();
    this.maxBuffered = opts.maxBuffered ?? 100_000;
    this.lingerMs = opts.lingerMs ?? 10;
    this.maxBatch = Math.min(opts.maxBatch ?? 2_000, MAX_BATCH_EVENTS);
    this.coalesce = opts.coalesce ?? true;
    this.sliceMs = opts.coalesceSliceMs ?? 1_000;
    this.batchRecords = opts.batchRecords ?? true;
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

  /**
   * Queues one event; false when the buffer is full and the event was dropped (counted). `urgent`:
   * send without waiting for the linger (the event takes its key near a limit). `group`: what
   * identical requests share, where the caller has it at hand: only events of one group are
   * compared for coalescing. A CoalesceSlot the caller keeps per group costs no lookup; a string
   * (the gateway: the counter key, whose hash the JS engine already holds) costs one Map lookup.
   * Either is correct for any grouping; the tenant key is the default.
   */
  enqueue(tenantKey: string, event: UsageEvent, headers?: Record<string, string>, urgent = false, group: string | CoalesceSlot = tenantKey): boolean {
    let candidates: Pending[] | undefined;
    // A request with an id, or with a trace context, stays an event of its own: the id is a fact
    // replay and audits need, and the trace context links the aggregator's span to that request.
    const coalescing = this.coalesce && event.requestId === undefined && headers === undefined;
    if (coalescing) {
      candidates = typeof group === 'string' ? this.byGroup.get(group) : group.newest;
      if (candidates !== undefined) {
        for (const same of candidates) {
          if (same.key !== tenantKey || same.event.cost + event.cost > MAX_EVENT_COST || !sameRequest(same.event, event, this.sliceMs)) continue;
          same.event.cost += event.cost;
          if (event.eventTime > same.event.eventTime) same.event.eventTime = event.eventTime;
          this.stats.enqueued += event.cost;
          this.stats.coalesced++;
          if (urgent) this.hurry();
          return true;
        }
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
    const p: Pending = { key: tenantKey, event, headers, group: coalescing ? group : undefined };
    this.queue.push(p);
    if (coalescing) {
      if (candidates === undefined) this.byGroup.set(group as string, (candidates = []));
      if (candidates.push(p) > GROUP_CANDIDATES) candidates.shift();
    }
    this.stats.enqueued += event.cost;
    if (urgent) this.hurry();
    // Wake an idle sender on the first event, so its linger starts now: otherwise the idle poll
    // (up to lingerMs) and then the linger itself would let an event wait up to twice lingerMs.
    else if (this.wake && (this.buffered === 1 || this.buffered >= this.maxBatch)) this.wake();
    return true;
  }

  private unindex(p: Pending): void {
    const slot = p.group!;
    const group = typeof slot === 'string' ? this.byGroup.get(slot) : slot.newest;
    if (group === undefined) return;
    const i = group.indexOf(p);
    if (i >= 0) group.splice(i, 1);
    if (group.length === 0 && typeof slot === 'string') this.byGroup.delete(slot);
  }

  private hurry(): void {
    this.urgent = true;
    this.wake?.();
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
    if (this.batchRecords && performance.now() - this.partitionsReadAt > (this.opts.metadataRefreshMs ?? 60_000)) await this.readPartitions();
    if (this.producer && this.connected) return this.producer;
    await this.producer?.disconnect().catch(() => {});
    // A fresh producer after a failure: the old one's sequence numbers may not match the broker's any more.
    this.producer = this.opts.kafka.producer({ idempotent: true, retries: 3, initialRetryMs: 100, maxRetryMs: 1_000 });
    await this.producer.connect();
    this.connected = true;
    return this.producer;
  }

  /** Reads the usage topic's partition count; a failure keeps the count read before (if any) and throws only without one. */
  private async readPartitions(): Promise<void> {
    const admin = this.opts.kafka.admin();
    try {
      await admin.connect();
      const [meta] = await admin.topicMetadata([this.opts.topic]);
      const n = meta?.partitions.length ?? 0;
      if (n === 0) throw new Error(`topic ${this.opts.topic} has no partitions`);
      if (n !== this.partitions) this.partitionOf.clear();
      this.partitions = n;
      this.partitionsReadAt = performance.now();
    } catch (e) {
      if (this.partitions === 0) throw e;
      this.log.warn("cannot read the usage topic's partitions; keeping the count read before", { error: e, partitions: this.partitions });
      this.partitionsReadAt = performance.now();
    } finally {
      await admin.disconnect().catch(() => {});
    }
  }

  /** The partition a record keyed by the tenant goes to. */
  private partition(tenantKey: string): number {
    let p = this.partitionOf.get(tenantKey);
    if (p === undefined) {
      if (this.partitionOf.size >= MAX_PARTITION_MEMO) this.partitionOf.clear();
      this.partitionOf.set(tenantKey, (p = javaPartition(tenantKey, this.partitions)));
    }
    return p;
  }

  /** Waits `ms`, or less if `wake` is called (a first event, a full batch, an urgent event, stop). */
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

  /** The records for a batch of pending events: one per partition (and gateway), or one per event. */
  private records(batch: readonly Pending[]): OutgoingRecord[] {
    const topic = this.opts.topic;
    if (!this.batchRecords) return batch.map((p) => ({ topic, key: p.key, value: JSON.stringify(p.event), headers: p.headers }));
    // Per partition, the batches of events that share the batch's header fields: one, for a
    // gateway's own events (its region, id and policy version never change).
    const groups = new Map<number, UsageEvent[][]>();
    const out: OutgoingRecord[] = [];
    for (const p of batch) {
      const partition = this.partition(p.key);
      const e = p.event;
      // A traced request's event travels alone, with its trace context in the record's headers, so
      // the aggregator's batch span links to every traced request (a record has one context).
      if (p.headers !== undefined) {
        out.push({ topic, key: null, partition, value: encodeBatch(batchHeaderOf(e), [e]), headers: p.headers });
        continue;
      }
      let batches = groups.get(partition);
      if (!batches) groups.set(partition, (batches = []));
      let events: UsageEvent[] | undefined;
      for (const b of batches) if (sameHeader(b[0]!, e)) events = b;
      if (!events) batches.push((events = []));
      events.push(e);
    }
    for (const [partition, batches] of groups) {
      for (const events of batches) out.push({ topic, key: null, partition, value: encodeBatch(batchHeaderOf(events[0]!), events) });
    }
    return out;
  }

  private async run(): Promise<void> {
    let backoff = 200;
    while (this.running) {
      if (this.buffered === 0) {
        await this.nap(this.lingerMs);
        continue;
      }
      if (this.buffered < this.maxBatch && !this.stopping && !this.urgent) await this.nap(this.lingerMs);
      this.urgent = false;
      const end = Math.min(this.queue.length, this.head + this.maxBatch);
      const batch = this.queue.slice(this.head, end);
      // Events in this batch may no longer absorb later identical ones: they are on their way.
      for (const p of batch) if (p.group !== undefined) this.unindex(p);
      try {
        const producer = await this.ensureProducer();
        const records = this.records(batch);
        await producer.send(records, { compression: 'gzip' });
        this.head = end;
        if (this.head > 4_096 && this.head * 2 > this.queue.length) {
          this.queue = this.queue.slice(this.head);
          this.head = 0;
        }
        let sent = 0;
        for (const p of batch) sent += p.event.cost;
        this.stats.sent += sent;
        this.stats.events += batch.length;
        this.stats.records += records.length;
        for (const r of records) this.stats.bytes += typeof r.value === 'string' ? Buffer.byteLength(r.value) : (r.value?.length ?? 0);
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

/** Whether two events may share a batch record: the fields a batch writes once. */
const sameHeader = (a: UsageEvent, b: UsageEvent): boolean => a.region === b.region && a.gatewayId === b.gatewayId && a.policyVersion === b.policyVersion;

/**
 * Whether two events are the same request for coalescing: the same time slice, route, subjects,
 * outcome and policy version (the emitter compares the tenant beside it). Everything replay could
 * see, field by field, so no crafted value can make two different requests look the same.
 */
export function sameRequest(a: UsageEvent, b: UsageEvent, sliceMs: number): boolean {
  if (
    Math.floor(a.eventTime / sliceMs) !== Math.floor(b.eventTime / sliceMs) ||
    a.api !== b.api ||
    a.method !== b.method ||
    a.path !== b.path ||
    a.policyVersion !== b.policyVersion ||
    a.outcome.kind !== b.outcome.kind
  )
    return false;
  if (a.outcome.kind !== 'admitted' && b.outcome.kind !== 'admitted') {
    const x = a.outcome.decision;
    const y = b.outcome.decision;
    if (x.counterKey !== y.counterKey || x.windowMs !== y.windowMs || x.decidedAt !== y.decidedAt) return false;
  }
  return sameSubjects(a.subjects, b.subjects);
}

function sameSubjects(a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>): boolean {
  let n = 0;
  for (const k in a) {
    if (!Object.hasOwn(b, k) || a[k] !== b[k]) return false;
    n++;
  }
  for (const _ in b) n--;
  return n === 0;
}
