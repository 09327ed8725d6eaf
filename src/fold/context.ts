/**
 * What the fold takes from the policy rather than from events: the context every decision and breach
 * record carries, the longest window (lateness), and how long counter keys live in the store.
 */
import type { CompiledPolicy } from '../policy/index.ts';
import { messageTemplate, renderMessage } from '../refusal/index.ts';
import type { DecisionContext } from './counter-state.ts';

/** A limit's count from which `near` snapshots go out (see CounterState.evaluateNear). */
export const DEFAULT_NEAR_RATIO = 0.8;

/** What every decision and breach record carries, and how refusal messages are rendered. */
export function decisionContext(policy: CompiledPolicy, region: string, nearRatio: number): DecisionContext {
  return {
    policyVersion: policy.version,
    region,
    nearRatio,
    message: (limit, retryAfter) =>
      renderMessage(messageTemplate(policy.refusal, limit.windowMs), { retry_after: retryAfter, window: limit.name, limit: limit.limit }),
  };
}

/** The longest window the policy counts (at least a minute): an event older than this behind the newest is late. */
export function longestWindowMs(policy: CompiledPolicy): number {
  const windows = [...policy.rules.flatMap((r) => r.limits), ...[...policy.overrides.values()].flatMap((o) => o.limits)];
  return Math.max(60_000, ...windows.map((l) => l.windowMs));
}

/** Counter keys outlive the longest window comfortably; an idle tenant's keys then expire on their own. */
export function counterTtlMs(policy: CompiledPolicy): number {
  return 2 * longestWindowMs(policy) + 10 * 60_000;
}
