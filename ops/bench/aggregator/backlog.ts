/**
 * Setup (not measured): the backlog's shape and policy, the usage events in it, and producing it
 * through the run's Kafka client.
 */
import type { Progress } from '../../../src/cli/ui.ts';
import type { UsageEvent } from '../../../src/events/index.ts';
import type { KafkaPort, OutgoingRecord } from '../../../src/kafka/port.ts';
import { topicNames } from '../../../src/kafka/topics.ts';
import { resolve, type CompiledPolicy } from '../../../src/policy/index.ts';
import { checkAbort } from '../common/cli.ts';
import { int, perSec } from '../common/figures.ts';
import { USAGE_PARTITIONS } from '../common/services.ts';
import { batchHeaderOf, encodeBatch } from '../../../src/events/batch.ts';
import { javaPartition } from '../../../src/kafka/partition.ts';
import type { Sizes } from './options.ts';
import type { AggregatorBench } from './tasks.ts';

/** One event in HOT_EVERY goes to a hot key (a prime, so the hot events do not line up with the key rotation). */
const HOT_EVERY = 97;
/** Event times span this much, ending when production starts: none is late, none in the future. */
const SPREAD_MS = 60_000;
const GATEWAYS = 4;
const PRODUCE_BATCH = 10_000;
const PRODUCE_IN_FLIGHT = 4;

export interface Shape {
  hotKeys: number;
  /** Admitted events per ordinary key in the minute, and per hot key. */
  perKey: number;
  perHotKey: number;
  minuteLimit: number;
  hourLimit: number;
}

/** Limits well above an ordinary key's minute of traffic, and below a hot key's: only hot keys block. */
export function shapeOf(sizes: Sizes): Shape {
  const hotKeys = Math.max(1, Math.round(sizes.keys / 1_000));
  const perKey = (sizes.events * (1 - 1 / HOT_EVERY)) / sizes.keys;
  const perHotKey = sizes.events / HOT_EVERY / hotKeys;
  const minuteLimit = Math.max(500, Math.ceil((5 * perKey) / 100) * 100);
  return { hotKeys, perKey, perHotKey, minuteLimit, hourLimit: 10 * minuteLimit };
}

export function policyText(shape: Shape): string {
  return `
version: "bench"
product: quotaflow aggregator benchmark
identity:
  api_key: { header: X-API-Key }
tenant: api_key
refusal:
  status: 429
  body: json_error
  error_code: RATE_LIMITED
  message: Rate limit exceeded. Try again in {retry_after} seconds.
  headers: [retry-after, x-ratelimit]
rules:
  - id: per-key
    default: true
    scope: api_key
    limits:
      - { limit: ${shape.minuteLimit}, window: 60s }
      - { limit: ${shape.hourLimit}, window: 1h }
`;
}

/** The k-th event of a memory backlog of n keys: one admitted event per key, so n counters. */
export function memoryEvent(runId: string, n: number, k: number, start: number): UsageEvent {
  return {
    schemaVersion: 1,
    eventTime: start - SPREAD_MS + Math.floor((k * SPREAD_MS) / n),
    region: 'bench',
    gatewayId: `gw-${k % GATEWAYS}`,
    subjects: { api_key: `bench-${runId}-m${n}-${k}` },
    api: null,
    cost: 1,
    outcome: { kind: 'admitted' },
    policyVersion: 'bench',
  };
}

/** The i-th event of the backlog, as a gateway would emit it (api null: the default rule). */
export function usageEvent(runId: string, i: number, sizes: Sizes, shape: Shape, start: number): UsageEvent {
  const k = i % HOT_EVERY === 0 ? Math.floor(i / HOT_EVERY) % shape.hotKeys : i % sizes.keys;
  return {
    schemaVersion: 1,
    eventTime: start - SPREAD_MS + Math.floor((i * SPREAD_MS) / sizes.events),
    region: 'bench',
    gatewayId: `gw-${i % GATEWAYS}`,
    subjects: { api_key: `bench-${runId}-key-${k}` },
    api: null,
    cost: 1,
    outcome: { kind: 'admitted' },
    policyVersion: 'bench',
  };
}

export interface Produced {
  ms: number;
  bytes: number;
  /** Kafka records (a usage batch record holds many events). */
  records: number;
  /** When production began: the backlog's event times end there. */
  start: number;
}

/**
 * Sends `events` usage events, the i-th being `eventOf(i, start)` (start: when production began):
 * big batches, several in flight, no idempotence and no compression (fastest here).
 */
export async function produceBacklog(
  kafka: KafkaPort,
  topic: string,
  events: number,
  eventOf: (i: number, start: number) => UsageEvent,
  policy: CompiledPolicy,
  ui: Progress,
  label: string,
  eventsPerRecord = 1,
): Promise<Produced> {
  const producer = kafka.producer({ idempotent: false, retries: 5 });
  await producer.connect();
  const start = Date.now();
  // Keys repeat in the throughput backlog: resolve each once. (Every key is new in the memory backlogs.)
  const tenantOf = new Map<string, string>();
  const keyOf = (e: UsageEvent) => {
    const apiKey = e.subjects.api_key!;
    let tenant = tenantOf.get(apiKey);
    if (tenant === undefined) {
      const r = resolve(policy, { subjects: e.subjects });
      if (r.kind !== 'resolved') throw new Error(`the bench policy does not resolve ${apiKey}: ${r.reason}`);
      tenant = r.tenantKey;
      if (tenantOf.size < 100_000) tenantOf.set(apiKey, tenant);
    }
    return tenant;
  };
  let next = 0;
  let acked = 0;
  let sentBytes = 0;
  let recordCount = 0;
  const t0 = performance.now();
  try {
    const worker = async () => {
      while (next < events) {
        checkAbort();
        const from = next;
        const to = Math.min(events, next + PRODUCE_BATCH);
        next = to;
        const records: OutgoingRecord[] = [];
        // Packed as a gateway packs them: per partition of the tenant, up to eventsPerRecord to a batch record.
        const packs = new Map<number, UsageEvent[]>();
        const pack = (partition: number, events: UsageEvent[]) => {
          const value = encodeBatch(batchHeaderOf(events[0]!), events);
          sentBytes += value.length;
          records.push({ topic, key: null, partition, value });
        };
        for (let i = from; i < to; i++) {
          const e = eventOf(i, start);
          if (eventsPerRecord === 1) {
            const value = JSON.stringify(e);
            sentBytes += value.length;
            records.push({ topic, key: keyOf(e), value }); // keyed by tenant, as the gateways do
            continue;
          }
          const partition = javaPartition(keyOf(e), USAGE_PARTITIONS);
          let events = packs.get(partition);
          if (!events) packs.set(partition, (events = []));
          events.push(e);
          if (events.length === eventsPerRecord) {
            pack(partition, events);
            packs.delete(partition);
          }
        }
        for (const [partition, events] of packs) pack(partition, events);
        await producer.send(records, { compression: 'none' });
        acked += to - from;
        recordCount += records.length;
        ui.update(`${label}: ${int(acked)} / ${int(events)} events (${perSec((acked * 1000) / (performance.now() - t0))})`);
      }
    };
    await Promise.all(Array.from({ length: PRODUCE_IN_FLIGHT }, worker));
  } finally {
    await producer.disconnect().catch(() => {});
  }
  return { ms: performance.now() - t0, bytes: sentBytes, records: recordCount, start };
}

/** Produces the throughput backlog and checks the usage topic holds it, whole; returns how many events that is. */
export async function setUpBacklog(bench: AggregatorBench): Promise<{ produced: Produced; backlog: number; records: number }> {
  const { services, sizes, shape, ui } = bench;
  const topic = topicNames(bench.topicPrefix).usage;
  const produced = await produceBacklog(
    services.kafka,
    topic,
    sizes.events,
    (i, start) => usageEvent(services.runId, i, sizes, shape, start),
    bench.policy,
    ui,
    'setup: producing the backlog',
    sizes.eventsPerRecord,
  );
  const perPartition = (await services.admin.offsets(topic)).map((o) => o.high - o.low).sort((a, b) => a - b);
  const records = perPartition.reduce((n, x) => n + x, 0);
  if (records !== produced.records) throw new Error(`the usage topic holds ${records} records, expected ${produced.records}`);
  const backlog = sizes.events;
  ui.done(
    `setup: ${int(backlog)} events (${(produced.bytes / 2 ** 20).toFixed(0)} MiB of JSON) over ${int(sizes.keys)} keys in ${(produced.ms / 1000).toFixed(1)} s (${perSec((backlog * 1000) / produced.ms)}); ${USAGE_PARTITIONS} partitions of ${int(perPartition[0]!)}–${int(perPartition[perPartition.length - 1]!)}`,
  );
  return { produced, backlog, records };
}

export function setupReport(produced: Produced, backlog: number, sizes: Sizes, shape: Shape): string[] {
  return [
    '## Setup (not measured)',
    '',
    `A backlog of ${int(backlog)} valid usage events (${(produced.bytes / 2 ** 20).toFixed(0)} MiB of JSON, ~${int(produced.bytes / backlog)} B each, no compression) in a topic of ${USAGE_PARTITIONS} partitions, ` +
      (produced.records === backlog
        ? 'one event per record, keyed by tenant, '
        : `packed into ${int(produced.records)} usage batch records (up to ${int(sizes.eventsPerRecord)} events each, ~${int(backlog / produced.records)} on average) on their tenants' partitions, as the gateways send them, `) +
      `from ${GATEWAYS} gateway ids, event times spread evenly over the minute before production (none late, none in the future). ` +
      `${int(sizes.keys)} API keys: each ordinary key has ~${int(shape.perKey)} events; 1 event in ${HOT_EVERY} goes to ${shape.hotKeys} hot key(s) (~${int(shape.perHotKey)} events each), the only ones to cross a limit. ` +
      `Policy (inline in the benchmark): one default rule per api_key, ${int(shape.minuteLimit)} per 60 s and ${int(shape.hourLimit)} per 1 h, both rolling. ` +
      `Produced in ${(produced.ms / 1000).toFixed(1)} s (batches of ${int(PRODUCE_BATCH)}, ${PRODUCE_IN_FLIGHT} in flight, non-idempotent, acks=all: the port's producer always waits for every replica, one here).`,
    '',
  ];
}
