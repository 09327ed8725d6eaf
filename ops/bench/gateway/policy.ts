/** The gateway benchmark's policy, and the requests and block decisions it measures with. */
import type { Decision } from '../../../src/events/index.ts';
import type { CheckRequest } from '../../../src/gateway/gateway.ts';
import { compilePolicy, parsePolicyText, resolve, type CompiledPolicy, type Resolved } from '../../../src/policy/index.ts';
import type { Sizes } from './options.ts';

/**
 * One API per measurement, each with its own rule: the checks' keys stay far under two limits shaped
 * like TalkPilot's (minute and hour, fixed windows); `Tight` crosses at its 3rd request; the
 * overshoot limits are fixed windows so "per window" is exact.
 */
export function benchPolicy(sizes: Sizes): CompiledPolicy {
  const windowS = `${sizes.windowMs / 1000}s`;
  const overshootRules = sizes.overshootLimits
    .map(
      (limit) => `
  - id: over-${limit}
    apis: [Over${limit}]
    scope: api_key
    limits: [{ limit: ${limit}, window: ${windowS}, kind: fixed }]`,
    )
    .join('');
  const text = `
version: "bench"
product: quotaflow gateway benchmark
identity:
  api_key: { header: X-API-Key }
tenant: api_key
apis:
  - { name: Roomy }
  - { name: Tight }
${sizes.overshootLimits.map((l) => `  - { name: Over${l} }`).join('\n')}
refusal:
  status: 429
  body: json_error
  error_code: RATE_LIMITED
  message: Rate limit exceeded. Try again in {retry_after} seconds.
  headers: [retry-after, x-ratelimit]
rules:
  - id: roomy
    apis: [Roomy]
    scope: api_key
    limits: [{ limit: 1000000, window: 60s, kind: fixed }, { limit: 10000000, window: 1h, kind: fixed }]
  - id: tight
    apis: [Tight]
    scope: api_key
    limits: [{ limit: 3, window: 60s }]${overshootRules}
`;
  return compilePolicy(parsePolicyText(text, 'gateway-bench.yaml'));
}

export function resolved(policy: CompiledPolicy, request: CheckRequest): Resolved {
  const r = resolve(policy, request);
  if (r.kind !== 'resolved') throw new Error(`the bench policy does not resolve ${JSON.stringify(request)}: ${r.reason}`);
  return r;
}

export function blockDecision(r: Resolved, now: number, untilMs: number): Decision {
  const limit = r.limits[0]!;
  return {
    schemaVersion: 1,
    counterKey: r.counterKey,
    tenant: r.tenantKey,
    rule: r.rule.id,
    window: limit.window,
    windowMs: limit.windowMs,
    windowKind: limit.kind,
    state: 'block',
    until: untilMs,
    limit: limit.limit,
    observed: limit.limit,
    message: `Rate limit exceeded. Try again in ${Math.ceil((untilMs - now) / 1000)} seconds.`,
    policyVersion: 'bench',
    region: 'bench',
    decidedAt: now,
  };
}
