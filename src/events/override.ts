/**
 * A runtime override (topic quota.overrides, compacted), written by `quotaflow limits set ...`. The
 * record key is the scope key (src/policy/keys.ts `scopeKey(rule, scope)`: the same key the policy
 * file's overrides compile to). Removing an override is a tombstone: a record with that key and a
 * null value; compaction then forgets it. A runtime override beats one in the policy file.
 */
import { z } from 'zod';
import { LimitSchema } from '../policy/schema.ts';
import { EpochMsSchema } from './usage.ts';

export const OVERRIDE_SCHEMA_VERSION = 1;

const common = {
  schemaVersion: z.literal(OVERRIDE_SCHEMA_VERSION).describe('Version of this override layout.'),
  key: z.string().min(1).describe('The scope key (rule + scope values) this override applies to; equals the Kafka record key.'),
  rule: z.string().min(1).describe('Id of the rule whose limits are replaced.'),
  subjects: z.record(z.string(), z.string()).describe('The scope values the key was built from (for people and audits).'),
  reason: z.string().optional().describe('Why (a support ticket, a contract).'),
  setBy: z.string().optional().describe('Who set it.'),
  setAt: EpochMsSchema.describe('When it was set (epoch ms).'),
  expiresAt: EpochMsSchema.nullable().optional().describe('When it stops applying (epoch ms); null or absent: until removed.'),
};

export const OverrideSchema = z
  .union([
    z.strictObject({ ...common, limits: z.array(LimitSchema).min(1).describe("Custom limits replacing the rule's.") }),
    z.strictObject({ ...common, unlimited: z.literal(true).describe('This key is never limited.') }),
  ])
  .describe('Custom limits, or unlimited, for one key of one rule. A null record value with the same key (a tombstone) removes it.');

export type Override = z.infer<typeof OverrideSchema>;
