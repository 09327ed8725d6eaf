/**
 * The usage batch: many usage events of one gateway in one quota.usage record (DESIGN §2). A
 * gateway packs the events bound for one partition into one record, so Kafka's per-record work
 * (partitioning, framing, CRCs, the aggregator's per-record bookkeeping) is paid once per batch, not
 * once per request. The fields every event of a gateway shares (region, gateway id, policy version)
 * are written once; each event in `events` is a usage event without them.
 *
 * Reading one: an event of the batch is the batch's shared fields plus its own, and is judged as a
 * single usage event would be: a bad one goes to the DLQ alone (as the single event it stands for,
 * which can be re-produced to quota.usage) while the rest of the batch is counted. All the events
 * of a batch share its offset, so an aggregator's fences (per tenant, by offset) apply to a tenant's
 * events of one batch together, and every one of them is counted exactly once.
 *
 * A record is a batch when its `kind` is "usage-batch"; any other record is a single usage event,
 * as before batches existed, so old gateways and producers written from usage-event.schema.json keep
 * working. Aggregators must be upgraded before gateways send batches: an older one dead-letters them.
 */
import { z } from 'zod';
import { UsageEventSchema, type UsageEvent } from './usage.ts';

export const USAGE_BATCH_KIND = 'usage-batch';
export const USAGE_BATCH_SCHEMA_VERSION = 1;
/** The most events one batch record may hold (a gateway sends at most its maxBatch, 2,000 by default). */
export const MAX_BATCH_EVENTS = 10_000;

/** The fields of a usage event that the batch carries once for all of its events. */
export const BATCH_SHARED_FIELDS = ['schemaVersion', 'region', 'gatewayId', 'policyVersion'] as const;

export const BatchedEventSchema = UsageEventSchema.omit({ schemaVersion: true, region: true, gatewayId: true, policyVersion: true }).describe(
  "One usage event of the batch, without the fields the batch carries for all of them: with the batch's region, gatewayId and policyVersion (and schemaVersion 1) it is a usage event.",
);

export const UsageBatchSchema = z
  .strictObject({
    kind: z.literal(USAGE_BATCH_KIND).describe('Marks the record as a batch of usage events.'),
    schemaVersion: z.literal(USAGE_BATCH_SCHEMA_VERSION).describe('Version of this batch layout (the events in it are usage events of version 1).'),
    region: UsageEventSchema.shape.region,
    gatewayId: UsageEventSchema.shape.gatewayId,
    policyVersion: UsageEventSchema.shape.policyVersion,
    events: z.array(BatchedEventSchema).min(1).max(MAX_BATCH_EVENTS).describe(`The events, in the order the gateway saw them (1 to ${MAX_BATCH_EVENTS}).`),
  })
  .describe('Many usage events of one gateway in one quota.usage record.');

export type UsageBatch = z.infer<typeof UsageBatchSchema>;
export type BatchedEvent = z.infer<typeof BatchedEventSchema>;

/** What the events of a batch share: one gateway, one region, one policy version. */
export interface BatchHeader {
  region: string;
  gatewayId: string;
  policyVersion?: string | undefined;
}

export const batchHeaderOf = (e: UsageEvent): BatchHeader => ({ region: e.region, gatewayId: e.gatewayId, policyVersion: e.policyVersion });

/**
 * The JSON text of a batch of events that share `header` (the caller groups them). Written by hand
 * rather than through an object per event: this runs for every request a gateway ships.
 */
export function encodeBatch(header: BatchHeader, events: readonly UsageEvent[]): string {
  let out = `{"kind":"${USAGE_BATCH_KIND}","schemaVersion":${USAGE_BATCH_SCHEMA_VERSION},"region":${JSON.stringify(header.region)},"gatewayId":${JSON.stringify(header.gatewayId)}`;
  if (header.policyVersion !== undefined) out += `,"policyVersion":${JSON.stringify(header.policyVersion)}`;
  out += ',"events":[';
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!;
    if (i > 0) out += ',';
    out += `{"eventTime":${e.eventTime},"subjects":${JSON.stringify(e.subjects)},"api":${e.api === null ? 'null' : JSON.stringify(e.api)}`;
    if (e.method !== undefined) out += `,"method":${JSON.stringify(e.method)}`;
    if (e.path !== undefined) out += `,"path":${JSON.stringify(e.path)}`;
    out += `,"cost":${e.cost},"outcome":${JSON.stringify(e.outcome)}`;
    if (e.requestId !== undefined) out += `,"requestId":${JSON.stringify(e.requestId)}`;
    out += '}';
  }
  return out + ']}';
}
