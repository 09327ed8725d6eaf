/**
 * The traffic plan: who sends what, at which rate. The tenants (the policy's unlimited and custom
 * keys, keys under their limits and one far over), their requests, and how their subject travels.
 */
import { resolve, type CompiledLimit, type CompiledPolicy, type Resolved } from '../../policy/index.ts';
import { SUBJECTS_HEADER } from '../../gateway/http.ts';
import { SEED_POLICY, usageError } from './options.ts';

interface PlannedRequest {
  method: string;
  path: string;
}

/** A typical TalkPilot integration: list agents, poll an agent's status, page through calls, replace forwarding slots. */
const INTEGRATION: PlannedRequest[] = [
  { method: 'GET', path: '/agents?limit=100' },
  { method: 'GET', path: '/agents/ag_1042/status' },
  { method: 'GET', path: '/calls?limit=100' },
  { method: 'PUT', path: '/forwarding-slots' },
];
const MONITORING: PlannedRequest[] = [{ method: 'GET', path: '/agents/ag_1042/status' }];
const RUNAWAY: PlannedRequest[] = [{ method: 'GET', path: '/calls?limit=100' }];

/** Requests per second of the policy's unlimited key (most of the load, none of the refusals); no other key under its limits sends more. */
const BULK_RATE = 30;
/** The over-limit key fills its shortest window in this long, so it is blocked within seconds of start. */
const FILL_SHORTEST_MS = 6_000;

type Persona =
  | { key: string; kind: 'steady'; share: number; role: string }
  | { key: string; kind: 'bulk'; role: string }
  | { key: string; kind: 'over'; role: string };

export interface TenantPlan {
  /** The subject value sent (an API key for TalkPilot). */
  key: string;
  /** As on usage events, decisions and breach records: `api_key=acme`. */
  tenantKey: string;
  /** The key `quotaflow limits set` takes for this tenant's counter. */
  scopeKey: string;
  role: string;
  overLimit: boolean;
  ratePerSec: number;
  /** "60/60s, 1000/1h" or "unlimited". */
  limits: string;
  requests: PlannedRequest[];
}

/** How a tenant's subject travels: in the policy's own header, else in the sidecar's X-Quotaflow-Subjects. */
export interface Identity {
  subject: string;
  viaSubjectsHeader: boolean;
  headers(key: string): Record<string, string>;
}

export function identityOf(policy: CompiledPolicy): Identity {
  const subject = policy.tenant[0]!;
  const header = policy.subjects.get(subject)?.header;
  if (header) return { subject, viaSubjectsHeader: false, headers: (key) => ({ [header]: key }) };
  return { subject, viaSubjectsHeader: true, headers: (key) => ({ [SUBJECTS_HEADER]: `${encodeURIComponent(subject)}=${encodeURIComponent(key)}` }) };
}

/** The policy file's own example keys on its default rule: one with custom limits, one unlimited. */
function policyKeys(policy: CompiledPolicy, subject: string): { custom?: string; unlimited?: string } {
  const out: { custom?: string; unlimited?: string } = {};
  for (const o of policy.policy.overrides) {
    const key = o.subjects[subject];
    if (o.rule !== policy.defaultRule?.id || key === undefined) continue;
    if (o.unlimited) out.unlimited ??= key;
    else out.custom ??= key;
  }
  return out;
}

function personas(policy: CompiledPolicy, subject: string): Persona[] {
  const { custom, unlimited } = policyKeys(policy, subject);
  return [
    ...(unlimited ? [{ key: unlimited, kind: 'bulk', role: 'bulk, unlimited key' } as const] : []),
    ...(custom ? [{ key: custom, kind: 'steady', share: 0.6, role: 'custom limits, 60% of them' } as const] : []),
    { key: 'acme', kind: 'steady', share: 0.9, role: 'CRM sync, 90% of limits' },
    { key: 'globex', kind: 'steady', share: 0.6, role: 'dialer, 60% of limits' },
    { key: 'initech', kind: 'steady', share: 0.3, role: 'reporting, 30% of limits' },
    { key: 'runaway', kind: 'over', role: 'loop ignoring Retry-After' },
  ];
}

const limitsText = (limits: readonly CompiledLimit[]) => limits.map((l) => `${l.limit}/${l.window}`).join(', ');
/** The steady rate (requests/s) that stays under every limit. */
const sustainable = (limits: readonly CompiledLimit[]) => Math.min(...limits.map((l) => l.limit / (l.windowMs / 1_000)));

/** How the sidecar will resolve this key's requests; refuses a policy the demo's traffic cannot exercise. */
function resolveAll(policy: CompiledPolicy, identity: Identity, key: string, requests: PlannedRequest[]): Resolved[] {
  return requests.map(({ method, path }) => {
    const r = resolve(policy, {
      method,
      path: path.split('?')[0],
      headers: lowerCase(identity.headers(key)),
      subjects: identity.viaSubjectsHeader ? { [identity.subject]: key } : undefined,
    });
    if (r.kind === 'unresolved') {
      throw usageError(
        `the demo's traffic does not resolve under ${policy.product}'s policy (${method} ${path}: ${r.reason})`,
        `the demo sends plain paths with the tenant in a header; use a policy with a default rule, e.g. ${SEED_POLICY} or policies/bolna.yaml`,
      );
    }
    return r;
  });
}

function planTenant(policy: CompiledPolicy, identity: Identity, p: Persona): TenantPlan {
  const requests = p.kind === 'bulk' ? MONITORING : p.kind === 'over' ? RUNAWAY : INTEGRATION;
  const resolved = resolveAll(policy, identity, p.key, requests);
  const first = resolved[0]!;
  const limited = resolved.filter((r) => !r.unlimited);
  const room = limited.length ? Math.min(...limited.map((r) => sustainable(r.limits))) : Infinity;
  let ratePerSec: number;
  if (p.kind === 'over') {
    const shortest = [...first.limits].sort((a, b) => a.windowMs - b.windowMs)[0];
    if (first.unlimited || !shortest)
      throw usageError(`the key "${p.key}" is unlimited under this policy, so nothing can go over a limit`, 'use a policy whose default rule limits every key');
    ratePerSec = Math.min(200, Math.max(shortest.limit / (FILL_SHORTEST_MS / 1_000), (2 * shortest.limit) / (shortest.windowMs / 1_000)));
  } else {
    ratePerSec = Math.min(BULK_RATE, p.kind === 'steady' ? p.share * room : room * 0.9);
  }
  return {
    key: p.key,
    tenantKey: first.tenantKey,
    scopeKey: first.scopeKey,
    role: p.role,
    overLimit: p.kind === 'over',
    ratePerSec,
    limits: first.unlimited ? 'unlimited' : limitsText(first.limits),
    requests,
  };
}

export function planTraffic(policy: CompiledPolicy, identity: Identity): TenantPlan[] {
  return personas(policy, identity.subject).map((p) => planTenant(policy, identity, p));
}

function lowerCase(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}
