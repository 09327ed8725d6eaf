/**
 * A validated policy, precompiled once into what resolution needs on the request path: a route
 * trie, name and rule lookup maps, parsed scopes, window lengths in ms and the policy's overrides by key.
 */
import { defaultBucketMs, windowName } from '../windows/index.ts';
import { tryParseDuration } from './duration.ts';
import { encodeComponent, scopeKey } from './keys.ts';
import { parseRoute, RouteTable } from './routes.ts';
import { parseScope, type Scope, type ScopePart } from './scope.ts';
import type { Limit, Policy, Refusal, Rule, Unidentified, WindowKind } from './schema.ts';

export interface CompiledLimit {
  limit: number;
  /** The window as written, e.g. "60s". */
  window: string;
  windowMs: number;
  kind: WindowKind;
  /** Bucket length; divides windowMs. */
  bucketMs: number;
  /** Name in the IETF RateLimit-Policy field ("minute", "hour"...). */
  name: string;
}

export interface CompiledRule {
  id: string;
  /** Position in the file (rules[index]). */
  index: number;
  isDefault: boolean;
  scope: Scope;
  scopeText: string;
  perApi: boolean;
  shadow: boolean;
  limits: readonly CompiledLimit[];
  /** What a request whose subjects are absent gets (the rule's own setting, else the policy's). */
  unidentified: Unidentified;
  source: Rule;
}

export interface CompiledApi {
  name: string;
  group: string | undefined;
  index: number;
  /** The name escaped for counter keys. */
  keyPart: string;
  /** The rule naming this API (directly or by group); undefined when only the default applies. */
  rule: CompiledRule | undefined;
}

export interface CompiledSubject {
  name: string;
  /** Lower-cased, as Node presents request headers. */
  header: string | undefined;
  param: string | undefined;
  query: string | undefined;
}

/** How request ids are read, minted and sent back (the policy's refusal.request_id, defaults applied). */
export interface CompiledRequestId {
  /** Lower-cased, as Node presents request headers. */
  header: string;
  /** As the policy writes it, for the response. */
  responseHeader: string;
  prefix: string;
  mint: 'refusals' | 'always' | 'never';
}

/** Limits replacing a rule's for one key. */
export interface CompiledOverride {
  unlimited: boolean;
  limits: readonly CompiledLimit[];
  reason: string | undefined;
}

export interface CompiledPolicy {
  policy: Policy;
  version: string;
  product: string;
  refusal: Refusal;
  requestId: CompiledRequestId;
  tenant: ScopePart;
  subjects: ReadonlyMap<string, CompiledSubject>;
  apis: readonly CompiledApi[];
  /** By name and by alias. */
  apiByName: ReadonlyMap<string, CompiledApi>;
  routes: RouteTable<CompiledApi>;
  rules: readonly CompiledRule[];
  defaultRule: CompiledRule | undefined;
  /** The policy file's overrides, by scope key (the same key runtime overrides use). */
  overrides: ReadonlyMap<string, CompiledOverride>;
}

export function compileLimit(limit: Limit): CompiledLimit {
  const windowMs = tryParseDuration(limit.window)!;
  return {
    limit: limit.limit,
    window: limit.window,
    windowMs,
    kind: limit.kind ?? 'rolling',
    bucketMs: limit.resolution === undefined ? defaultBucketMs(windowMs) : tryParseDuration(limit.resolution)!,
    name: limit.name ?? windowName(windowMs),
  };
}

/** An override as it arrives at run time (quota.overrides) or in the policy file. */
export function compileOverride(override: {
  limits?: readonly Limit[] | undefined;
  unlimited?: true | undefined;
  reason?: string | undefined;
}): CompiledOverride {
  return {
    unlimited: override.unlimited === true,
    limits: override.unlimited === true ? [] : (override.limits ?? []).map(compileLimit),
    reason: override.reason,
  };
}

/** Compiles a policy returned by parsePolicy/loadPolicyFile (it relies on validation having passed). */
export function compilePolicy(policy: Policy): CompiledPolicy {
  const rules: CompiledRule[] = policy.rules.map((rule, index) => ({
    id: rule.id,
    index,
    isDefault: rule.default === true,
    scope: parseScope(rule.scope),
    scopeText: rule.scope,
    perApi: rule.per_api,
    shadow: rule.shadow,
    limits: rule.limits.map(compileLimit),
    unidentified: rule.unidentified ?? policy.unidentified,
    source: rule,
  }));

  const apis: CompiledApi[] = policy.apis.map((api, index) => ({
    name: api.name,
    group: api.group,
    index,
    keyPart: encodeComponent(api.name),
    rule: undefined,
  }));
  const apiByName = new Map<string, CompiledApi>();
  const routes = new RouteTable<CompiledApi>();
  policy.apis.forEach((api, i) => {
    const compiled = apis[i]!;
    apiByName.set(api.name, compiled);
    for (const alias of api.aliases ?? []) apiByName.set(alias, compiled);
    for (const route of api.routes ?? []) routes.add(parseRoute(route), compiled);
  });
  for (const rule of rules) {
    for (const name of rule.source.apis ?? []) apiByName.get(name)!.rule = rule;
    for (const group of rule.source.groups ?? []) for (const api of apis) if (api.group === group) api.rule = rule;
  }

  const subjects = new Map<string, CompiledSubject>();
  for (const [name, source] of Object.entries(policy.identity)) {
    subjects.set(name, { name, header: source.header?.toLowerCase(), param: source.param, query: source.query });
  }

  const overrides = new Map<string, CompiledOverride>();
  for (const override of policy.overrides) {
    const rule = rules.find((r) => r.id === override.rule)!;
    const scope = rule.scope.map((part) => {
      const subject = part.find((s) => override.subjects[s] !== undefined)!;
      return { subject, value: override.subjects[subject]! };
    });
    overrides.set(scopeKey(rule.id, scope), compileOverride(override));
  }

  const ids = policy.refusal.request_id;
  const requestId: CompiledRequestId = {
    header: (ids?.header ?? 'X-Request-Id').toLowerCase(),
    responseHeader: ids?.header ?? 'X-Request-Id',
    prefix: ids?.prefix ?? 'req_',
    // A json_error body has a request_id field: by default every refusal fills it.
    mint: ids?.mint ?? (policy.refusal.body === 'json_error' ? 'refusals' : 'never'),
  };

  return {
    policy,
    version: policy.version,
    product: policy.product,
    refusal: policy.refusal,
    requestId,
    tenant: policy.tenant.split('|'),
    subjects,
    apis,
    apiByName,
    routes,
    rules,
    defaultRule: rules.find((r) => r.isDefault),
    overrides,
  };
}
