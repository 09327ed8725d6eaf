/**
 * Resolution: a request → its API, the one rule that applies, the counter key and the tenant.
 * Pure and allocation-light: it runs on every request, on a policy compiled once.
 *
 * Precedence, in order (shown by `quotaflow policy explain`):
 *  1. API: `request.api` (a name or alias) if given; else method + path through the route trie, where
 *     at each segment a literal beats a parameter, and an exact method beats `*`. No match: no API.
 *  2. Rule: the rule that names the API (directly or through its group) beats the default rule. No
 *     rule and no default: unresolved. Validation guarantees an API belongs to at most one rule.
 *  3. Subjects: for each subject, the caller's `subjects` value wins, then the identity's header, route
 *     parameter and query parameter, in that order. For a fallback chain, the first present subject.
 *     A subject still absent: the rule's `unidentified` decides (anonymous fills it in here; refuse
 *     and admit leave the request unresolved, for the gateway to act on).
 *  4. Limits: a runtime override for the key (quota.overrides) beats an override in the policy file,
 *     which beats the rule's limits. An `unlimited` override means nothing is counted against a limit.
 */
import type { CompiledApi, CompiledLimit, CompiledOverride, CompiledPolicy, CompiledRule, CompiledSubject } from './compile.ts';
import { counterKeyOf, scopeKey, tenantKey, type SubjectValue } from './keys.ts';
import type { ScopePart } from './scope.ts';

type HeaderValue = string | readonly string[] | undefined;

export interface ResolveRequest {
  method?: string;
  path?: string;
  /** The API by name, for callers that know it (the Kore policies name APIs without routes). */
  api?: string;
  /** Subject values passed by the caller; they win over values read from the HTTP request. */
  subjects?: Readonly<Record<string, string | null | undefined>>;
  /** Request headers with lower-case names, as Node presents them. */
  headers?: Readonly<Record<string, HeaderValue>>;
  query?: Readonly<Record<string, HeaderValue>>;
}

export interface Resolved {
  kind: 'resolved';
  api: CompiledApi | undefined;
  /** How the API was found. */
  apiMatchedBy: 'name' | 'route' | 'none';
  rule: CompiledRule;
  /** Why this rule: it names the API, or it is the default. */
  precedence: 'rule-for-api' | 'default';
  tenant: SubjectValue;
  /** The tenant as a Kafka key and Redis hash tag content (no `{` or `}`). */
  tenantKey: string;
  /** The subject chosen for each scope part, in scope order. */
  scope: SubjectValue[];
  /** The key overrides are stored under (rule + scope values). */
  scopeKey: string;
  /** The counter: tenant hash tag, rule, API when per_api, scope values. */
  counterKey: string;
  /** The limits that apply (the override's, if one matched). */
  limits: readonly CompiledLimit[];
  limitsFrom: 'rule' | 'policy-override' | 'runtime-override';
  unlimited: boolean;
  shadow: boolean;
  /** True when absent subjects were counted under the rule's anonymous value (`unidentified: anonymous`). */
  anonymous: boolean;
  /** Route parameters of the matched route. */
  params: Readonly<Record<string, string>>;
}

export interface Unresolved {
  kind: 'unresolved';
  reason: string;
  api: CompiledApi | undefined;
  rule: CompiledRule | undefined;
  /** Subjects (or chains, as `a|b`) that were needed and absent. */
  missing: string[];
}

export type Resolution = Resolved | Unresolved;

/** Runtime overrides by scope key, e.g. folded from the quota.overrides topic. */
export type OverrideLookup = Pick<ReadonlyMap<string, CompiledOverride>, 'get'>;

const NO_PARAMS: Readonly<Record<string, string>> = Object.freeze({});

function first(value: HeaderValue): string | undefined {
  if (value === undefined) return undefined;
  const v = typeof value === 'string' ? value : value[0];
  return v === '' ? undefined : v;
}

function subjectValue(
  name: string,
  source: CompiledSubject | undefined,
  request: ResolveRequest,
  params: Readonly<Record<string, string>>,
): string | undefined {
  const given = request.subjects?.[name];
  if (given !== undefined && given !== null) return given;
  if (source === undefined) return undefined;
  let v: string | undefined;
  if (source.header !== undefined && request.headers !== undefined && (v = first(request.headers[source.header])) !== undefined) return v;
  if (source.param !== undefined && (v = params[source.param]) !== undefined && v !== '') return v;
  if (source.query !== undefined && request.query !== undefined && (v = first(request.query[source.query])) !== undefined) return v;
  return undefined;
}

function pick(chain: ScopePart, policy: CompiledPolicy, request: ResolveRequest, params: Readonly<Record<string, string>>): SubjectValue | undefined {
  for (const subject of chain) {
    const value = subjectValue(subject, policy.subjects.get(subject), request, params);
    if (value !== undefined) return { subject, value };
  }
  return undefined;
}

/** For a fallback chain, the anonymous value stands for its last subject (the one that applies when nothing better is known). */
function anonymousSubject(chain: ScopePart, value: string): SubjectValue {
  return { subject: chain[chain.length - 1]!, value };
}

export function resolve(policy: CompiledPolicy, request: ResolveRequest, runtimeOverrides?: OverrideLookup): Resolution {
  let api: CompiledApi | undefined;
  let apiMatchedBy: Resolved['apiMatchedBy'] = 'none';
  let params = NO_PARAMS;
  if (request.api !== undefined) {
    api = policy.apiByName.get(request.api);
    if (api) apiMatchedBy = 'name';
  } else if (request.path !== undefined) {
    const match = policy.routes.match((request.method ?? 'GET').toUpperCase(), request.path);
    if (match) {
      api = match.value;
      params = match.params;
      apiMatchedBy = 'route';
    }
  }

  const rule = api?.rule ?? policy.defaultRule;
  if (rule === undefined) {
    const what = request.api !== undefined ? `API "${request.api}"` : `${request.method ?? 'GET'} ${request.path ?? '(no path)'}`;
    return {
      kind: 'unresolved',
      reason: api ? `no rule limits ${what} and the policy has no default rule` : `${what} matches no API and the policy has no default rule`,
      api,
      rule: undefined,
      missing: [],
    };
  }

  // An absent subject under `unidentified: anonymous` takes the rule's anonymous value.
  const anonymousValue = rule.unidentified.action === 'anonymous' ? rule.unidentified.value : undefined;
  let anonymous = false;
  let tenant = pick(policy.tenant, policy, request, params);
  if (tenant === undefined && anonymousValue !== undefined) {
    tenant = anonymousSubject(policy.tenant, anonymousValue);
    anonymous = true;
  }
  const scope: SubjectValue[] = [];
  let missing: string[] | undefined;
  for (const part of rule.scope) {
    let chosen = pick(part, policy, request, params);
    if (chosen === undefined && anonymousValue !== undefined) {
      chosen = anonymousSubject(part, anonymousValue);
      anonymous = true;
    }
    if (chosen) scope.push(chosen);
    else (missing ??= []).push(part.join('|'));
  }
  if (tenant === undefined) (missing ??= []).push(policy.tenant.join('|'));
  if (missing !== undefined || tenant === undefined) {
    const unique = [...new Set(missing)];
    return {
      kind: 'unresolved',
      reason: `missing subject ${unique.join(', ')} (rule "${rule.id}")`,
      api,
      rule,
      missing: unique,
    };
  }

  const overrideKey = scopeKey(rule.id, scope);
  let override = runtimeOverrides?.get(overrideKey);
  let limitsFrom: Resolved['limitsFrom'] = 'runtime-override';
  if (override === undefined) {
    override = policy.overrides.get(overrideKey);
    limitsFrom = 'policy-override';
  }
  if (override === undefined) limitsFrom = 'rule';
  const tenantText = tenantKey(tenant);

  return {
    kind: 'resolved',
    api,
    apiMatchedBy,
    rule,
    precedence: api?.rule === rule ? 'rule-for-api' : 'default',
    tenant,
    tenantKey: tenantText,
    scope,
    scopeKey: overrideKey,
    counterKey: counterKeyOf(tenantText, overrideKey, rule.perApi && api ? api.keyPart : undefined),
    limits: override ? override.limits : rule.limits,
    limitsFrom,
    unlimited: override?.unlimited ?? false,
    shadow: rule.shadow,
    anonymous,
    params,
  };
}
