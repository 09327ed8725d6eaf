/** The records quotaflow exchanges over Kafka, each declared once as a zod schema (DESIGN §2). */
export {
  DEFAULT_FUTURE_SKEW_MS,
  DecisionRefSchema,
  EpochMsSchema,
  MAX_EVENT_COST,
  OutcomeSchema,
  USAGE_EVENT_SCHEMA_VERSION,
  UsageEventSchema,
  type DecisionRef,
  type Outcome,
  type UsageEvent,
} from './usage.ts';
export { DECISION_SCHEMA_VERSION, DecisionSchema, type Decision } from './decision.ts';
export { BREACH_RECORD_SCHEMA_VERSION, BreachRecordSchema, type BreachRecord } from './breach.ts';
export { OVERRIDE_SCHEMA_VERSION, OverrideSchema, type Override } from './override.ts';
export { ROLLUP_SCHEMA_VERSION, RollupSchema, decodeRollup, encodeRollup, isNewerTotal, rollupKey, type DecodedRollup, type Rollup } from './rollup.ts';
export { RESERVED_KEYS, findReservedKey, isReservedKey } from './reserved.ts';
