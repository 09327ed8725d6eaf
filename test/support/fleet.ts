/**
 * For the gateway fleet tests (test/integration/gateway-fleet.test.ts): gateways and an aggregator
 * that are stopped when the test ends, a poll for state that changes without an event to wait on,
 * and an exact reader of what reached quota.usage.
 */
import type { TestContext } from 'node:test';
import type { IncomingRecord, KafkaPort } from '../../src/kafka/port.ts';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { Gateway, type GatewayOptions } from '../../src/gateway/gateway.ts';
import type { UsageEvent } from '../../src/events/index.ts';
import type { CompiledPolicy } from '../../src/policy/index.ts';
import { openUsageStore } from '../../src/store/index.ts';
import { services } from './integration.ts';
import { waitFor } from './wait.ts';
import { readUntil, type AggregatorTestEnv } from './aggregator.ts';

/** LIFO cleanups run in one `t.after` hook, for tests that do not use aggregatorEnv. */
export function cleanupStack(t: TestContext): (cleanup: () => Promise<unknown> | unknown) => void {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });
  return (c) => cleanups.push(c);
}

/** Polls `predicate` until it holds (waitFor, for the fleet tests' many yes/no conditions). */
export async function eventually(what: string, predicate: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 25): Promise<void> {
  await waitFor(what, predicate, { timeoutMs, everyMs });
}

/**
 * Gateways and aggregators that are stopped together when the test ends: one `defer` (registered
 * by the first start), everything in parallel, since each stop waits seconds for its consumers'
 * fetches. Stopping a gateway twice is harmless.
 */
export class Fleet {
  private readonly stops: Array<() => Promise<unknown>> = [];

  constructor(private readonly defer: (c: () => Promise<unknown>) => void) {}

  private onStop(stop: () => Promise<unknown>): void {
    if (this.stops.length === 0) this.defer(() => Promise.all(this.stops.map((s) => s())));
    this.stops.push(stop);
  }

  /** A started gateway (its cache warms in the background: see `whenWarm`). */
  gateway(opts: GatewayOptions): Gateway {
    const gateway = new Gateway(opts);
    this.onStop(() => gateway.stop());
    gateway.start();
    return gateway;
  }

  /** A started aggregator on the env's topics, group and Redis key prefix. */
  async aggregator(env: AggregatorTestEnv, policy: CompiledPolicy): Promise<Aggregator> {
    const store = await openUsageStore(services().redisUrl, { keyPrefix: env.keyPrefix });
    const aggregator = new Aggregator({
      kafka: env.kafka,
      store,
      policy,
      topics: env.topics,
      groupId: env.groupId,
      region: 'test',
      sessionTimeoutMs: 10_000,
      tickMs: 50,
      retryMinMs: 50,
      retryMaxMs: 500,
    });
    this.onStop(async () => {
      await aggregator.stop();
      await store.close();
    });
    await aggregator.start();
    return aggregator;
  }
}

/** Waits until the gateway's emitter has handed every buffered event to Kafka (acknowledged). */
export function drained(gateway: Gateway, timeoutMs: number): Promise<void> {
  const e = gateway.emitter!;
  return eventually(`gateway ${gateway.id} to hand every buffered event to Kafka`, () => e.buffered === 0, timeoutMs);
}

/**
 * Every usage event on the topic, read up to the partitions' current ends (so "exactly" means
 * nothing more is there, not "at least what we waited for").
 */
export async function usageEvents(kafka: KafkaPort, topic: string, timeoutMs = 60_000): Promise<UsageEvent[]> {
  // The records the topic holds, read to the end it has; asked again after reading, so that end
  // offsets a broker reported just after a restart cannot cut the read short.
  let records: IncomingRecord[] = [];
  for (let total = await recordCount(kafka, topic); total > records.length; total = await recordCount(kafka, topic)) {
    records = await readUntil(kafka, topic, (rs) => rs.length >= total, timeoutMs, `${total} records on ${topic}`);
  }
  return records.flatMap((r) => eventsOf(JSON.parse(r.value!.toString())));
}

async function recordCount(kafka: KafkaPort, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return (await admin.offsets(topic)).reduce((n, p) => n + p.high - p.low, 0);
  } finally {
    await admin.disconnect();
  }
}

/**
 * The usage events a quota.usage record holds: itself, or a usage batch's events with the batch's
 * shared fields (read here from the layout in schemas/usage-batch.schema.json, not with the decoder
 * under test).
 */
export function eventsOf(value: Record<string, unknown>): UsageEvent[] {
  if (value.kind !== 'usage-batch') return [value as unknown as UsageEvent];
  const { region, gatewayId, policyVersion } = value;
  return (value.events as object[]).map(
    (e) => ({ schemaVersion: 1, region, gatewayId, ...(policyVersion === undefined ? {} : { policyVersion }), ...e }) as unknown as UsageEvent,
  );
}

/** Requests (summed cost) and messages of one gateway among usage events. */
export function fromGateway(events: UsageEvent[], gatewayId: string): { messages: number; cost: number; events: UsageEvent[] } {
  const mine = events.filter((e) => e.gatewayId === gatewayId);
  return { messages: mine.length, cost: mine.reduce((n, e) => n + e.cost, 0), events: mine };
}
