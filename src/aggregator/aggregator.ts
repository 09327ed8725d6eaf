/**
 * The aggregator: a member of a Kafka consumer group on quota.usage that folds usage events into
 * rolling-window counts, effectively once, and publishes block/unblock decisions and breach records.
 *
 * Per consumed batch (one partition):
 *  1. decode and validate each event; bad ones go to the DLQ with the reason (good ones flow on);
 *  2. resolve its counter keys with the policy; drop late events (metric);
 *  3. load, in one round trip, the counters and fences of tenants this process does not hold yet;
 *  4. fold the events, in offset order and skipping those at or below the tenant's fence, into the
 *     in-memory counters, which decide on event time (see counter-state.ts);
 *  5. publish decisions, breach records and DLQ records (before the Redis write: a crash after
 *     publishing only repeats identical decisions on redelivery, it never loses one);
 *  6. write every tenant's increments to the store in one round trip, fenced by offsets; while the
 *     store is down the partition pauses here, retrying with backoff and committing nothing;
 *  7. commit the offsets.
 * A fence conflict (another member wrote for the tenant: a rebalance, a zombie) drops the tenant's
 * memory and fails the batch, so Kafka redelivers it and the tenant is reloaded.
 */
import { EventEmitter } from 'node:events';
import { ROOT_CONTEXT, metrics, propagation, trace, type Counter, type Gauge, type Histogram, type Link, type TextMapGetter } from '@opentelemetry/api';
import type { GroupConsumer, IncomingRecord, KafkaPort, OutgoingRecord, PartitionBatch, Producer } from '../kafka/port.ts';
import type { BreachRecord, Decision } from '../events/index.ts';
import { QuotaflowError } from '../errors.ts';
import { logger, type Logger } from '../log.ts';
import type { CompiledPolicy, Resolved } from '../policy/index.ts';
import type { TopicNames } from '../kafka/topics.ts';
import { ATTR, METER, METRIC, SPAN, TRACER } from '../telemetry/names.ts';
import { DEFAULT_FUTURE_SKEW_MS } from '../events/index.ts';
import { CounterState, type DecisionContext, type Effects } from '../fold/counter-state.ts';
import { DEFAULT_NEAR_RATIO, counterTtlMs, decisionContext, longestWindowMs } from '../fold/context.ts';
import { dlqMessage } from './dlq.ts';
import { RollupPublisher } from './rollups.ts';
import { OverrideFeed } from '../overrides/feed.ts';
import type { TenantWrite, UsageStore } from '../store/types.ts';
import { decodeItems, foldItems, lapseBlocks, newPartition, storeWrites, trackBlock, type Item, type PartitionState as FoldPartition } from '../fold/fold.ts';

export interface AggregatorOptions {
  kafka: KafkaPort;
  store: UsageStore;
  policy: CompiledPolicy;
  topics: TopicNames;
  groupId: string;
  region: string;
  /** Event times further ahead of this clock than `futureSkewMs` go to the DLQ. */
  clock?: () => number;
  futureSkewMs?: number;
  /** Partitions processed at once (each holds its own state). */
  partitionsConsumedConcurrently?: number;
  /** How often blocks are checked for lapsing. */
  tickMs?: number;
  /** Publish `near` snapshots from this share of a limit on (0 = never). Default DEFAULT_NEAR_RATIO. */
  nearRatio?: number;
  /** Follow quota.overrides (runtime per-key limits); default true. */
  followOverrides?: boolean;
  /** Backoff bounds while the store is down. */
  retryMinMs?: number;
  retryMaxMs?: number;
  sessionTimeoutMs?: number;
  /**
   * Fault injection for tests: wait this long between the store write and the offset commit, the
   * window in which a crash leaves counted events uncommitted (redelivered, and fenced off).
   */
  faultPauseBeforeCommitMs?: number;
  /**
   * Publish the region's own bucket totals to quota.rollup, at most every `everyMs` (default 250),
   * for MirrorMaker 2 to carry to the other regions (see rollups.ts). Off when not given.
   */
  rollups?: { everyMs?: number };
  log?: Logger;
}

export interface AggregatorStats {
  batches: number;
  /** Records consumed: a usage batch record holds many events. */
  records: number;
  /** Events consumed (decoded), including those of batches still in flight. */
  events: number;
  /** Events of batches whose Redis write and offset commit are done. */
  committed: number;
  /** Requests those events stand for (a coalesced event stands for several). */
  committedRequests: number;
  /** Records of those batches (a usage batch record holds many events). */
  committedRecords: number;
  counted: number;
  refusedEvents: number;
  skippedBelowFence: number;
  late: number;
  dlq: number;
  decisions: number;
  breachRecords: number;
  /** Rollup records sent (one per bucket and flush). */
  rollups: number;
  storeRoundTrips: number;
  storeFailures: number;
  conflicts: number;
}

/** The fold's state of a partition, and what the live aggregator keeps beside it. */
interface PartitionState extends FoldPartition {
  /** Scope keys whose override changed, applied when the partition is not mid-batch. */
  overrideChanges: Set<string>;
  busy: boolean;
  /** The lapse timer's meta-only write in flight; a batch waits for it before touching the partition. */
  metaWrite: Promise<void> | undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Links per batch span at most (OpenTelemetry's default span link limit). */
const MAX_LINKS = 128;

/** Reads W3C trace context (traceparent, tracestate) from Kafka message headers. */
const headerGetter: TextMapGetter<Record<string, Buffer | string | (Buffer | string)[] | undefined>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => {
    const v = carrier[key];
    if (v === undefined) return undefined;
    return Array.isArray(v) ? v.map(String) : String(v);
  },
};

/**
 * Links to the gateways' spans that produced the batch's events, from the trace context the gateways
 * put in message headers (at most MAX_LINKS, the first ones). Without a propagator installed, none.
 */
function producerLinks(records: readonly IncomingRecord[]): Link[] {
  const links: Link[] = [];
  for (const m of records) {
    if (m.headers.traceparent === undefined) continue;
    const ctx = trace.getSpanContext(propagation.extract(ROOT_CONTEXT, m.headers, headerGetter));
    if (ctx !== undefined) links.push({ context: ctx });
    if (links.length >= MAX_LINKS) break;
  }
  return links;
}

/** How often counters that count nothing any more are dropped from memory. */
const EVICT_EVERY_MS = 30_000;

/** Bytes per produce request: below the broker's default message.max.bytes (1 MiB) with room to spare. */
const MAX_REQUEST_BYTES = 512 * 1024;

/** What an Aggregator emits, by name (EventEmitter refuses any other at compile time). */
export interface AggregatorEvents {
  /** The partitions this member owns after a rebalance. */
  assigned: [partitions: number[]];
  /** A batch was written to the store and committed. */
  batch: [info: { partition: number; messages: number; lastOffset: number }];
  decision: [decision: Decision];
  breach: [record: BreachRecord];
  /** A store call failed and is retried (the partition waits). */
  'store-failure': [error: unknown];
  /** A batch failed; the consumer restarts from the last commit. */
  crash: [error: unknown];
  /** The consumer stopped on an error it cannot retry: this aggregator must be restarted. */
  fatal: [error: unknown];
}

export class Aggregator extends EventEmitter<AggregatorEvents> {
  readonly stats: AggregatorStats = {
    batches: 0,
    records: 0,
    events: 0,
    committed: 0,
    committedRequests: 0,
    committedRecords: 0,
    counted: 0,
    refusedEvents: 0,
    skippedBelowFence: 0,
    late: 0,
    dlq: 0,
    decisions: 0,
    breachRecords: 0,
    rollups: 0,
    storeRoundTrips: 0,
    storeFailures: 0,
    conflicts: 0,
  };
  private readonly consumer: GroupConsumer;
  private readonly producer: Producer;
  private readonly partitions = new Map<number, PartitionState>();
  private readonly clock: () => number;
  private readonly log: Logger;
  private readonly ctx: DecisionContext;
  private readonly longestWindowMs: number;
  private readonly ttlMs: number;
  private timer: NodeJS.Timeout | undefined;
  private publishing: Promise<void> = Promise.resolve();
  private overrides: OverrideFeed | undefined;
  private lastEviction = 0;
  private running = false;
  private readonly rollups: RollupPublisher | undefined;
  private readonly instruments: {
    events: Counter;
    late: Counter;
    dlq: Counter;
    touched: Counter;
    decisions: Counter;
    breaches: Counter;
    overshoot: Counter;
    redisFailures: Counter;
    batch: Histogram;
    redis: Histogram;
    lag: Gauge;
  };

  constructor(private readonly opts: AggregatorOptions) {
    super();
    this.clock = opts.clock ?? Date.now;
    this.log = opts.log ?? logger('aggregator');
    this.consumer = opts.kafka.consumer({ groupId: opts.groupId, sessionTimeoutMs: opts.sessionTimeoutMs ?? 30_000, maxBytesPerPartition: 4 * 1024 * 1024 });
    // Bounded retries (about two minutes), so a Kafka that cannot take the decisions fails the batch
    // loudly (the consumer then restarts from the last commit) instead of hanging it forever. Bounded
    // retries weaken idempotence; a duplicated decision or record is harmless here (same content,
    // compacted or deduplicated by identity).
    this.producer = opts.kafka.producer({ idempotent: true, retries: 12, maxRetryMs: 10_000 });
    this.ctx = decisionContext(opts.policy, opts.region, opts.nearRatio ?? DEFAULT_NEAR_RATIO);
    this.longestWindowMs = longestWindowMs(opts.policy);
    this.ttlMs = counterTtlMs(opts.policy);
    const meter = metrics.getMeter(METER);
    this.instruments = {
      events: meter.createCounter(METRIC.aggregatorEvents, { description: 'usage events consumed' }),
      late: meter.createCounter(METRIC.aggregatorLate, { description: 'events older than the longest window, dropped' }),
      dlq: meter.createCounter(METRIC.aggregatorDlq, { description: 'events sent to the dead-letter topic' }),
      touched: meter.createCounter(METRIC.aggregatorCountersTouched, { description: 'counters changed per batch, summed' }),
      decisions: meter.createCounter(METRIC.aggregatorDecisions, { description: 'block and unblock decisions published' }),
      breaches: meter.createCounter(METRIC.aggregatorBreaches, { description: 'breach records published' }),
      overshoot: meter.createCounter(METRIC.aggregatorOvershoot, { description: 'requests admitted over a limit (closed breaches)' }),
      redisFailures: meter.createCounter(METRIC.aggregatorRedisFailures, { description: 'failed store round trips (retried)' }),
      batch: meter.createHistogram(METRIC.aggregatorBatchLatency, { unit: 'ms', description: 'time to process one consumed batch' }),
      redis: meter.createHistogram(METRIC.aggregatorRedisLatency, { unit: 'ms', description: 'store round trip time' }),
      lag: meter.createGauge(METRIC.aggregatorLag, { description: 'messages behind the end of the partition after the last batch' }),
    };
    if (opts.rollups) {
      const published = meter.createCounter(METRIC.aggregatorRollups, { description: 'rollup records published (a bucket total each)' });
      this.rollups = new RollupPublisher({
        producer: this.producer,
        topic: opts.topics.rollup,
        region: opts.region,
        everyMs: opts.rollups.everyMs,
        busy: (p) => this.partitions.get(p)?.busy ?? false,
        clock: this.clock,
        log: this.log.child('rollups'),
        onSent: (n) => {
          this.stats.rollups += n;
          published.add(n);
        },
      });
    }
  }

  async start(): Promise<void> {
    const { topics } = this.opts;
    if (this.opts.followOverrides ?? true) {
      this.overrides = new OverrideFeed(this.opts.kafka, topics.overrides, this.log.child('overrides'));
      this.overrides.on('change', (scopeKey) => {
        for (const part of this.partitions.values()) part.overrideChanges.add(scopeKey);
        void this.tick().catch((e) => this.log.warn('applying an override failed', { error: e }));
      });
      await this.overrides.start();
    }
    await this.producer.connect();
    this.running = true;
    await this.consumer.run({
      topic: topics.usage,
      fromBeginning: true,
      partitionsConcurrently: this.opts.partitionsConsumedConcurrently ?? 3,
      onBatch: (batch) => this.onBatch(batch),
      onAssigned: (partitions) => {
        const owned = new Set(partitions);
        for (const p of this.partitions.keys()) if (!owned.has(p)) this.partitions.delete(p);
        this.log.info('joined the consumer group', { groupId: this.opts.groupId, partitions: [...owned].sort((a, b) => a - b).join(',') });
        this.emit('assigned', [...owned]);
      },
      onError: (error, restarting) => {
        this.emit('crash', error);
        if (restarting) {
          this.log.warn('the consumer failed a batch; it restarts from the last committed offset', { error });
        } else {
          // The consumer has stopped for good: say so loudly rather than sit idle.
          this.log.error('the consumer stopped on an error it cannot retry; this aggregator must be restarted', { error });
          this.emit('fatal', error);
        }
      },
    });
    this.timer = setInterval(() => void this.tick().catch((e) => this.log.warn('lapse timer failed', { error: e })), this.opts.tickMs ?? 250);
    this.timer.unref();
    this.rollups?.start();
  }

  /** Finishes the batch in flight, commits, leaves the group. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    clearInterval(this.timer);
    // Each consumer waits out a fetch in flight before it stops: side by side.
    await Promise.all([this.consumer.stop(), this.overrides?.stop()]);
    // After the consumer (no batch in flight): the last totals go out before the producer closes.
    await this.rollups?.stop().catch((e) => this.log.warn('the last rollups could not be published', { error: e }));
    await this.producer.disconnect(); // after the consumer: the batch in flight publishes before it commits
    this.log.info('stopped', { ...this.stats });
  }

  private partition(p: number): PartitionState {
    let s = this.partitions.get(p);
    if (!s) {
      s = { ...newPartition(), overrideChanges: new Set(), busy: false, metaWrite: undefined };
      this.partitions.set(p, s);
    }
    return s;
  }

  private async onBatch(batch: PartitionBatch): Promise<void> {
    const { records, heartbeat } = batch;
    if (records.length === 0) return;
    const started = performance.now();
    const p = batch.partition;
    const part = this.partition(p);
    // A lapse-timer write in flight goes first; a tick cannot start another before `busy` is set
    // (its timer cannot run between the promise settling and this continuation).
    while (part.metaWrite) await part.metaWrite;
    part.busy = true;
    const span = trace.getTracer(TRACER).startSpan(SPAN.aggregatorBatch, {
      attributes: { [ATTR.partition]: p, 'messaging.batch.message_count': records.length },
      links: producerLinks(records),
    });
    try {
      const now = this.clock();
      if (part.overrideChanges.size) await this.publish(this.applyOverrideChanges(part, now), []);

      // 1–2: decode, validate, resolve; drop late events
      const decoded = decodeItems(part, records, {
        policy: this.opts.policy,
        overrides: this.overrides,
        longestWindowMs: this.longestWindowMs,
        now,
        futureSkewMs: this.opts.futureSkewMs ?? DEFAULT_FUTURE_SKEW_MS,
      });
      const dlq = decoded.rejected.map(({ index, reason, detail, event }) => {
        const m = records[index]!;
        this.instruments.dlq.add(1, { [ATTR.reason]: reason });
        // One bad event of a batch record: the DLQ gets that event alone, as a usage event.
        const source = {
          topic: batch.topic,
          partition: p,
          offset: String(m.offset),
          key: m.key,
          value: event ? event.value : m.value,
          timestamp: String(m.timestamp),
          batchIndex: event && String(event.index),
        };
        return dlqMessage(this.opts.topics.usageDlq, source, reason, detail, now);
      });
      if (decoded.late) {
        this.stats.late += decoded.late;
        this.instruments.late.add(decoded.late, { [ATTR.partition]: p });
      }
      this.stats.records += records.length;
      this.stats.events += decoded.events;
      this.instruments.events.add(decoded.events, { [ATTR.partition]: p });

      // 3: load what this process does not hold yet
      await this.loadMissing(p, part, decoded.items, batch);

      // 4: fold in offset order, deciding on event time
      const effects: Effects = { decisions: [], breaches: [] };
      const folded = foldItems(part, decoded.items, effects, { ctx: this.ctx, collectIncrements: true });
      this.stats.counted += folded.counted;
      this.stats.refusedEvents += folded.refused;
      this.stats.skippedBelowFence += folded.skipped;
      const touched = folded.touched;

      // 5: publish before the store write (see the module comment)
      await this.publish(effects, dlq);

      // 6: one fenced round trip for every tenant touched
      const writes = storeWrites(touched, part.watermark, this.ttlMs);
      if (writes.length) {
        const results = await this.withStoreRetry('apply', () => this.opts.store.apply(p, writes), batch);
        let conflicts = 0;
        for (const r of results) {
          const t = touched.get(r.tenantKey)!;
          if (r.status === 'conflict' || (r.status === 'already-applied' && r.fence !== t.newFence)) {
            // Another member wrote for this tenant since we loaded it: our memory is stale.
            part.tenants.delete(r.tenantKey);
            for (const cs of t.tenant.counters.values()) part.blocked.delete(cs);
            conflicts++;
          } else {
            t.tenant.fence = r.fence;
            if (this.rollups) for (const [cs, inc] of t.increments) for (const x of inc.list) this.rollups.mark(p, cs, x.bucketMs, x.bucketIndex);
          }
        }
        this.instruments.touched.add(writes.reduce((n, w) => n + w.counters.length, 0));
        if (conflicts) {
          this.stats.conflicts += conflicts;
          throw new QuotaflowError(
            'FENCE_CONFLICT',
            `${conflicts} tenant(s) on partition ${p} were written by another aggregator since they were loaded; reloading them`,
            { retriable: true },
          );
        }
      }

      // 7: commit
      const last = records[records.length - 1]!.offset;
      this.log.debug('batch applied to the store; committing offsets', { partition: p, lastOffset: last, tenants: writes.length });
      if (this.opts.faultPauseBeforeCommitMs) await sleep(this.opts.faultPauseBeforeCommitMs);
      await batch.commit(last + 1);
      await heartbeat();
      this.instruments.lag.record(Math.max(0, batch.highWatermark - last - 1), { [ATTR.partition]: p });
      this.stats.batches++;
      this.stats.committed += decoded.events;
      this.stats.committedRequests += decoded.requests;
      this.stats.committedRecords += records.length;
      this.emit('batch', { partition: p, messages: records.length, lastOffset: last });
    } catch (e) {
      span.recordException(e as Error);
      throw e;
    } finally {
      part.busy = false;
      span.end();
      this.instruments.batch.record(performance.now() - started, { [ATTR.partition]: p });
    }
  }

  /**
   * Writes what the lapse timer changed (block lifted, breach closed) without waiting for the tenant's
   * next batch, at the tenant's current fence (a meta-only write: see applyUsage-n.lua). So a new
   * owner after a rebalance does not repeat the unblock and breach record, and the counter may leave
   * memory once idle. Best effort, one attempt: if the store is down or the tenant's fence moved, the
   * changes go back to the counter and travel with its next write, as before.
   */
  private writeMeta(p: number, part: PartitionState, counters: CounterState[]): Promise<void> {
    const byTenant = new Map<string, { fence: number; writes: Array<{ cs: CounterState; meta: Array<[string, string]> }> }>();
    for (const cs of counters) {
      const tenant = part.tenants.get(cs.tenantKey);
      const meta = cs.takeMetaChanges();
      if (meta.length === 0) continue;
      // A meta-only write goes at the tenant's fence: without one the changes wait for its next write.
      if (!tenant || tenant.fence === null || tenant.counters.get(cs.counterKey) !== cs) {
        cs.requeueMeta(meta);
        continue;
      }
      let t = byTenant.get(cs.tenantKey);
      if (!t) byTenant.set(cs.tenantKey, (t = { fence: tenant.fence, writes: [] }));
      t.writes.push({ cs, meta });
    }
    if (byTenant.size === 0) return Promise.resolve();
    const writes: TenantWrite[] = [...byTenant].map(([tenantKey, t]) => ({
      tenantKey,
      expectedFence: t.fence,
      newFence: t.fence,
      ttlMs: this.ttlMs,
      counters: t.writes.map(({ cs, meta }) => ({ counterKey: cs.counterKey, increments: [], meta: Object.fromEntries(meta) })),
    }));
    const started = performance.now();
    const write = this.opts.store
      .apply(p, writes)
      .then(
        (results) => {
          this.stats.storeRoundTrips++;
          this.instruments.redis.record(performance.now() - started, { op: 'meta' });
          for (const r of results) {
            if (r.status !== 'applied') for (const w of byTenant.get(r.tenantKey)!.writes) w.cs.requeueMeta(w.meta);
          }
        },
        (e) => {
          this.stats.storeFailures++;
          this.instruments.redisFailures.add(1, { op: 'meta' });
          this.log.debug('writing lapsed blocks to the store failed; they go with the next write', { partition: p, error: e });
          for (const t of byTenant.values()) for (const w of t.writes) w.cs.requeueMeta(w.meta);
        },
      )
      .finally(() => {
        if (part.metaWrite === write) part.metaWrite = undefined;
      });
    part.metaWrite = write;
    return write;
  }

  private async loadMissing(p: number, part: PartitionState, items: Item[], batch: PartitionBatch): Promise<void> {
    const need = new Map<string, Map<string, Resolved>>();
    for (const { resolved: r } of items) {
      const tenant = part.tenants.get(r.tenantKey);
      if (tenant?.counters.has(r.counterKey)) continue;
      let m = need.get(r.tenantKey);
      if (!m) need.set(r.tenantKey, (m = new Map()));
      m.set(r.counterKey, r);
    }
    if (need.size === 0) return;
    const request = [...need].map(([tenantKey, m]) => ({ tenantKey, counterKeys: [...m.keys()] }));
    const loaded = await this.withStoreRetry('load', () => this.opts.store.load(p, request), batch);
    for (const l of loaded) {
      const m = need.get(l.tenantKey)!;
      let tenant = part.tenants.get(l.tenantKey);
      if (!tenant) part.tenants.set(l.tenantKey, (tenant = { fence: l.fence, counters: new Map() }));
      for (const stored of l.counters) {
        const r = m.get(stored.counterKey)!;
        const cs = new CounterState(stored.counterKey, l.tenantKey, r.rule, r.limits, r.scopeKey);
        for (const b of stored.buckets) cs.counter.loadBucket(b.bucketMs, b.bucketIndex, b.count);
        cs.restoreMeta(new Map(Object.entries(stored.meta)));
        trackBlock(part, cs, undefined);
        tenant.counters.set(stored.counterKey, cs);
        // Its predecessor may have died before publishing these totals.
        this.rollups?.markCounter(p, cs);
      }
    }
  }

  /** Retries a store call with backoff while the store is down: the partition pauses, nothing is committed. */
  private async withStoreRetry<T>(what: string, call: () => Promise<T>, batch: PartitionBatch): Promise<T> {
    let backoff = this.opts.retryMinMs ?? 100;
    for (let attempt = 1; ; attempt++) {
      const started = performance.now();
      try {
        const out = await call();
        this.stats.storeRoundTrips++;
        this.instruments.redis.record(performance.now() - started, { op: what });
        if (attempt > 1) this.log.info('the store answers again; resuming', { op: what, attempts: attempt });
        return out;
      } catch (e) {
        this.stats.storeFailures++;
        this.instruments.redisFailures.add(1, { op: what });
        const retriable = (e as { retriable?: unknown }).retriable === true;
        if (!retriable || !this.running || !batch.isActive()) throw e;
        this.log.warn('the store is not answering; this partition waits and retries, committing nothing', { op: what, attempt, retryInMs: backoff, error: e });
        this.emit('store-failure', e);
        await sleep(backoff);
        await batch.heartbeat().catch(() => {});
        backoff = Math.min(backoff * 2, this.opts.retryMaxMs ?? 5_000);
      }
    }
  }

  /**
   * Publishes one batch's decisions, breach records and DLQ records. Sends are serialized: an
   * idempotent producer breaks its sequence numbers under concurrent sends (kafkajs's does:
   * OUT_OF_ORDER_SEQUENCE_NUMBER), and partitions are processed concurrently. Each request stays
   * well under the broker's 1 MB.
   */
  private publish(effects: Effects, dlq: OutgoingRecord[]): Promise<void> {
    const next = this.publishing.then(() => this.send(effects, dlq));
    this.publishing = next.catch(() => {});
    return next;
  }

  private async send(effects: Effects, dlq: OutgoingRecord[]): Promise<void> {
    const { topics } = this.opts;
    const outgoing: OutgoingRecord[] = [];
    // A near snapshot followed by another decision on the same counter in this batch is already
    // superseded (the topic is compacted on that key): it would only reach gateways to be replaced.
    const lastIndex = new Map<string, number>();
    for (const [i, d] of effects.decisions.entries()) lastIndex.set(d.counterKey, i);
    effects.decisions = effects.decisions.filter((d, i) => d.state !== 'near' || lastIndex.get(d.counterKey) === i);
    for (const d of effects.decisions) {
      outgoing.push({ topic: topics.decisions, key: d.counterKey, value: JSON.stringify(d) });
      this.instruments.decisions.add(1, { [ATTR.state]: d.state, [ATTR.rule]: d.rule });
      this.emit('decision', d);
    }
    this.stats.decisions += effects.decisions.length;
    for (const b of effects.breaches) {
      outgoing.push({ topic: topics.audit, key: b.tenant, value: JSON.stringify(b) });
      if (b.liftedAt !== null) this.instruments.overshoot.add(b.overshoot, { [ATTR.rule]: b.rule });
      this.instruments.breaches.add(1, { [ATTR.rule]: b.rule });
      this.emit('breach', b);
    }
    this.stats.breachRecords += effects.breaches.length;
    outgoing.push(...dlq);
    this.stats.dlq += dlq.length;

    let bytes = 0;
    let chunk: OutgoingRecord[] = [];
    for (const o of outgoing) {
      const size = (o.value?.length ?? 0) + (o.key?.length ?? 0) + 100;
      if (bytes + size > MAX_REQUEST_BYTES && chunk.length) {
        await this.producer.send(chunk);
        chunk = [];
        bytes = 0;
      }
      chunk.push(o);
      bytes += size;
    }
    if (chunk.length) await this.producer.send(chunk);
  }

  /**
   * Re-limits the counters of every scope key whose override changed: a raised limit (or an
   * unlimited key) lifts the block now rather than when the window rolls.
   */
  private applyOverrideChanges(part: PartitionState, now: number): Effects {
    const effects: Effects = { decisions: [], breaches: [] };
    const changed = part.overrideChanges;
    part.overrideChanges = new Set();
    for (const tenant of part.tenants.values()) {
      for (const [counterKey, cs] of tenant.counters) {
        if (!changed.has(cs.scopeKey)) continue;
        const o = this.overrides?.get(cs.scopeKey) ?? this.opts.policy.overrides.get(cs.scopeKey);
        part.blocked.delete(cs);
        if (o?.unlimited) {
          cs.lift(now, this.ctx, effects);
          continue;
        }
        const next = cs.withLimits(o ? o.limits : cs.rule.limits, now, this.ctx, effects);
        tenant.counters.set(counterKey, next);
        trackBlock(part, next, undefined);
      }
    }
    return effects;
  }

  /** Lapses blocks whose `until` has passed (event time never advances for a key nobody may use). */
  private async tick(): Promise<void> {
    if (!this.running) return;
    const now = this.clock();
    const effects: Effects = { decisions: [], breaches: [] };
    const metaWrites: Promise<void>[] = [];
    for (const [p, part] of this.partitions) {
      if (part.busy) continue; // the batch in flight owns the partition's state
      if (part.overrideChanges.size) {
        const fx = this.applyOverrideChanges(part, now);
        effects.decisions.push(...fx.decisions);
        effects.breaches.push(...fx.breaches);
      }
      const lapsed = now >= part.nextLapse ? lapseBlocks(part, now, this.ctx, effects) : [];
      if (lapsed.length) metaWrites.push(this.writeMeta(p, part, lapsed));
    }
    if (effects.decisions.length || effects.breaches.length) await this.publish(effects, []);
    await Promise.all(metaWrites);
    if (now - this.lastEviction >= EVICT_EVERY_MS) this.evictIdle(now);
  }

  /**
   * Drops counters that count nothing any more, and tenants left with none, so memory follows the
   * active keys rather than every key ever seen. A dropped tenant is reloaded (fence included) from
   * Redis by its next event.
   */
  private evictIdle(now: number): void {
    this.lastEviction = now;
    let evicted = 0;
    for (const part of this.partitions.values()) {
      if (part.busy) continue;
      for (const [tenantKey, tenant] of part.tenants) {
        for (const [counterKey, cs] of tenant.counters) {
          if (cs.idle(now)) {
            tenant.counters.delete(counterKey);
            evicted++;
          }
        }
        if (tenant.counters.size === 0) part.tenants.delete(tenantKey);
      }
    }
    if (evicted) this.log.debug('evicted idle counters', { evicted });
  }
}
