/**
 * A decision: an aggregator's verdict on one counter and one window (topic quota.decisions, compacted,
 * keyed by counter key). Gateways cache blocks and expire them at `until` on their own, so a lost
 * unblock never locks a key out.
 */
import { z } from 'zod';
import { WindowKindSchema } from '../policy/schema.ts';
import { EpochMsSchema } from './usage.ts';

export const DECISION_SCHEMA_VERSION = 1;

export const DecisionSchema = z
  .strictObject({
    schemaVersion: z.literal(DECISION_SCHEMA_VERSION).describe('Version of this decision layout.'),
    counterKey: z.string().min(1).describe('The counter decided on (see src/policy/keys.ts).'),
    tenant: z.string().min(1).describe('Tenant key (`subject=value`), the hash tag inside the counter key.'),
    rule: z.string().min(1).describe('Id of the rule whose limit was reached or lifted.'),
    window: z.string().min(1).describe('The limit\'s window as written in the policy, e.g. "60s".'),
    windowMs: z.number().int().positive().describe('Window length in ms.'),
    windowKind: WindowKindSchema,
    state: z
      .enum(['block', 'unblock', 'near'])
      .describe(
        'block: refuse until `until`; unblock: lifted (window lapsed, override or reset); near: the count is close to the limit, each of `gateways` gateways may admit only its share of what remains until `until`.',
      ),
    until: EpochMsSchema.describe('When the window has room again if nothing more is admitted (epoch ms).'),
    limit: z.number().int().positive().describe('The limit that was reached.'),
    observed: z.number().int().nonnegative().describe('The count observed when deciding.'),
    message: z.string().describe('The refusal message for this window, rendered from the policy.'),
    policyVersion: z.string().min(1).describe('Version of the policy the decision was made under.'),
    region: z.string().min(1).describe('Region of the aggregator that decided.'),
    decidedAt: EpochMsSchema.describe('When the decision was made (epoch ms).'),
    gateways: z
      .number()
      .int()
      .positive()
      .optional()
      .describe('near only: gateways that sent events for this counter within the window; each may spend 1/gateways of the room left.'),
  })
  .describe('A block or unblock of one counter for one window.');

export type Decision = z.infer<typeof DecisionSchema>;
