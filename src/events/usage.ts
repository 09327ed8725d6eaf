/**
 * The usage event: what a gateway reports for each admitted or refused request (topic quota.usage,
 * keyed by tenant). The aggregators fold these into windows; replay re-folds them under any policy,
 * which is why the event carries the subjects and route rather than precomputed counter keys.
 */
import { z } from 'zod';
import { NOT_RESERVED_PATTERN } from './reserved.ts';

export const USAGE_EVENT_SCHEMA_VERSION = 1;

/**
 * The most requests one event may stand for. The aggregator dead-letters a higher cost as
 * `absurd-cost`; the bound is declared here once, so the JSON Schema publishes the same number.
 */
export const MAX_EVENT_COST = 1_000_000;

/**
 * How far ahead of an aggregator's clock an eventTime may be before the event is dead-lettered as
 * `future` (the aggregator's default; a relative bound, so the JSON Schema can only describe it).
 */
export const DEFAULT_FUTURE_SKEW_MS = 60_000;

/** Subject names on events: any text but the keys that are never data (reserved.ts). */
const EventSubjectNameSchema = z.string().regex(new RegExp(NOT_RESERVED_PATTERN), 'must not be __proto__, constructor or prototype');

export const EpochMsSchema = z.number().int().nonnegative().describe('Unix epoch time in milliseconds.');

export const DecisionRefSchema = z
  .strictObject({
    counterKey: z.string().min(1).describe('Counter key of the decision that refused the request.'),
    windowMs: z.number().int().positive().describe('Window length of the blocking limit, in ms.'),
    decidedAt: EpochMsSchema.describe('decidedAt of that decision: with counterKey and windowMs it names one decision.'),
  })
  .describe('Which block decision a gateway applied.');

export const OutcomeSchema = z
  .discriminatedUnion('kind', [
    z.strictObject({ kind: z.literal('admitted').describe('The request was let through and consumes quota.') }),
    z.strictObject({
      kind: z.literal('refused').describe('Refused locally: counted for the audit, consumes no quota.'),
      decision: DecisionRefSchema,
    }),
    z.strictObject({
      kind: z.literal('shadow_refused').describe('A shadow rule would have refused it; it was admitted and consumes quota.'),
      decision: DecisionRefSchema,
    }),
  ])
  .describe('What the gateway did with the request.');

export const UsageEventSchema = z
  .strictObject({
    schemaVersion: z.literal(USAGE_EVENT_SCHEMA_VERSION).describe('Version of this event layout.'),
    eventTime: EpochMsSchema.describe(
      "When the request arrived, by the gateway's clock (ms). Windows count on this time. An eventTime more than " +
        `the aggregator's future skew (default ${DEFAULT_FUTURE_SKEW_MS} ms) ahead of its clock is dead-lettered as "future".`,
    ),
    region: z.string().min(1).describe('Region of the gateway.'),
    gatewayId: z.string().min(1).describe('The gateway instance that saw the request.'),
    subjects: z
      .record(EventSubjectNameSchema, z.string())
      .describe('Subject values of the request (api_key, account, bot, organization, user, ...); no key may be __proto__, constructor or prototype.'),
    api: z.string().min(1).nullable().describe('The API the request resolved to; null when it matched none (default rule).'),
    method: z.string().min(1).optional().describe('HTTP method, kept so replay can re-resolve routes under another policy.'),
    path: z.string().optional().describe('HTTP path (no query string), kept for the same reason.'),
    cost: z
      .number()
      .int()
      .min(1)
      .max(MAX_EVENT_COST)
      .describe(`Requests this event stands for (1 to ${MAX_EVENT_COST}): identical requests may be coalesced into one event.`),
    outcome: OutcomeSchema,
    requestId: z.string().optional().describe('The request id, when the gateway has one.'),
    policyVersion: z.string().min(1).optional().describe('Version of the policy the gateway resolved with.'),
  })
  .describe('One request (or several coalesced identical requests) seen by a gateway.');

export type DecisionRef = z.infer<typeof DecisionRefSchema>;
export type Outcome = z.infer<typeof OutcomeSchema>;
export type UsageEvent = z.infer<typeof UsageEventSchema>;
