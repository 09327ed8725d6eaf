/**
 * A breach record: the audit trail of one counter crossing one limit (topic quota.audit, keyed by
 * tenant, long retention). Written when the breach is lifted, or updated while it lasts.
 */
import { z } from 'zod';
import { WindowKindSchema } from '../policy/schema.ts';
import { EpochMsSchema } from './usage.ts';

export const BREACH_RECORD_SCHEMA_VERSION = 1;

export const BreachRecordSchema = z
  .strictObject({
    schemaVersion: z.literal(BREACH_RECORD_SCHEMA_VERSION).describe('Version of this record layout.'),
    tenant: z.string().min(1).describe('Tenant key (`subject=value`).'),
    counterKey: z.string().min(1).describe('The counter that crossed its limit.'),
    rule: z.string().min(1).describe('Id of the rule.'),
    window: z.string().min(1).describe('The limit\'s window as written in the policy, e.g. "1h".'),
    windowMs: z.number().int().positive().describe('Window length in ms.'),
    windowKind: WindowKindSchema,
    limit: z.number().int().positive().describe('The limit that was crossed.'),
    firstCrossedAt: EpochMsSchema.describe('Event time at which the counter first reached the limit.'),
    countAtCrossing: z.number().int().nonnegative().describe('The count when the limit was first reached.'),
    peakCount: z.number().int().nonnegative().describe('The highest count seen while the breach lasted.'),
    liftedAt: EpochMsSchema.nullable().describe('When the block was lifted; null while it lasts.'),
    refused: z.number().int().nonnegative().describe("Requests refused meanwhile, from the gateways' outcomes."),
    overshoot: z.number().int().nonnegative().describe('Requests admitted over the limit (decisions arrive late; gateways spend only their share).'),
    policyVersion: z.string().min(1).describe('Version of the policy in force.'),
    region: z.string().min(1).describe('Region of the aggregator that recorded it.'),
  })
  .describe('One breach of one limit by one counter, for the audit trail.');

export type BreachRecord = z.infer<typeof BreachRecordSchema>;
