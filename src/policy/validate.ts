/**
 * Turning untrusted input into a Policy: zod's shape checks, then the checks that need the whole file
 * (names that must exist, things that must be unique, routes two APIs would both match). Every
 * problem is reported with the path of the bad field, all at once, and a policy with any problem is
 * refused as a whole: there is no half-loaded policy.
 */
import type { z } from 'zod';
import { QuotaflowError } from '../errors.ts';
import { tryParseDuration } from './duration.ts';
import { PolicySchema, ROUTE_PATTERN, SCOPE_PATTERN, TENANT_PATTERN, type Policy } from './schema.ts';
import { sameMethod, parseRoute, routeShape } from './routes.ts';
import { parseScope } from './scope.ts';
import { findReservedKey } from '../events/reserved.ts';

export interface PolicyIssue {
  /** Where the problem is, e.g. `rules[2].limits[0].window`; empty for the document itself. */
  path: string;
  message: string;
}

export type PolicyValidation = { ok: true; policy: Policy } | { ok: false; issues: PolicyIssue[] };

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** ['rules', 2, 'limits', 0, 'window'] → `rules[2].limits[0].window`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else if (typeof key === 'string' && IDENTIFIER.test(key)) out += out === '' ? key : `.${key}`;
    else out += `[${JSON.stringify(String(key))}]`;
  }
  return out;
}

function shapeIssues(error: z.ZodError): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) issues.push({ path: formatPath([...issue.path, key]), message: 'unknown field' });
    } else if (issue.code === 'invalid_type' && issue.input === undefined) {
      issues.push({ path: formatPath(issue.path), message: `required field is missing (expected ${issue.expected})` });
    } else {
      issues.push({ path: formatPath(issue.path), message: issue.message });
    }
  }
  return issues;
}

// The cross-field checks read the raw input defensively, so they also run (and report) when the
// shape is wrong elsewhere in the file.
type Raw = Record<string, unknown>;
const asObject = (v: unknown): Raw | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Raw) : undefined);
const asArray = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const asString = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const SCOPE_RE = new RegExp(SCOPE_PATTERN);
const TENANT_RE = new RegExp(TENANT_PATTERN);
const ROUTE_RE = new RegExp(ROUTE_PATTERN);
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

function crossIssues(raw: Raw): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  const add = (path: PropertyKey[], message: string) => issues.push({ path: formatPath(path), message });

  const identity = asObject(raw.identity) ?? {};
  const subjects = new Set(Object.keys(identity));
  const known = () => (subjects.size ? [...subjects].join(', ') : 'none');
  const requireSubject = (subject: string, path: PropertyKey[]) => {
    if (!subjects.has(subject)) {
      add(path, `identity does not provide subject "${subject}" (declared: ${known()}); add identity.${subject}`);
    }
  };

  const tenant = asString(raw.tenant);
  if (tenant !== undefined && TENANT_RE.test(tenant)) {
    for (const subject of tenant.split('|')) requireSubject(subject, ['tenant']);
  }

  // APIs: unique names (aliases included), routes no two APIs share.
  const apiNames = new Map<string, number>();
  const groups = new Set<string>();
  const routeOwners: { method: string; shape: string; api: number; name: string }[] = [];
  const routeParams = new Set<string>();
  asArray(raw.apis).forEach((value, i) => {
    const api = asObject(value);
    if (!api) return;
    const name = asString(api.name);
    const group = asString(api.group);
    if (group !== undefined) groups.add(group);
    const names: [string, PropertyKey[]][] = [];
    if (name !== undefined) names.push([name, ['apis', i, 'name']]);
    asArray(api.aliases).forEach((alias, k) => {
      if (typeof alias === 'string') names.push([alias, ['apis', i, 'aliases', k]]);
    });
    for (const [n, path] of names) {
      const first = apiNames.get(n);
      if (first !== undefined) add(path, `duplicate API name "${n}" (already used by apis[${first}])`);
      else apiNames.set(n, i);
    }
    asArray(api.routes).forEach((r, k) => {
      if (typeof r !== 'string' || !ROUTE_RE.test(r)) return;
      const route = parseRoute(r);
      const seen = new Set<string>();
      for (const segment of route.segments) {
        if (segment.kind !== 'param') continue;
        if (!PARAM_NAME.test(segment.name)) add(['apis', i, 'routes', k], `route parameter "${segment.name}" is not a name like ":agent_id"`);
        else if (seen.has(segment.name)) add(['apis', i, 'routes', k], `route parameter ":${segment.name}" appears twice`);
        seen.add(segment.name);
        routeParams.add(segment.name);
      }
      const shape = routeShape(route);
      const clash = routeOwners.find((o) => o.shape === shape && sameMethod(o.method, route.method));
      if (clash) {
        const owner = clash.api === i ? 'this API' : `apis[${clash.api}] ("${clash.name}")`;
        add(['apis', i, 'routes', k], `route "${r}" is also matched by ${owner} (${clash.method} ${clash.shape}); a request must resolve to one API`);
      } else {
        routeOwners.push({ method: route.method, shape, api: i, name: name ?? `apis[${i}]` });
      }
    });
  });

  for (const [subject, source] of Object.entries(identity)) {
    const param = asString(asObject(source)?.param);
    if (param !== undefined && !routeParams.has(param)) {
      add(['identity', subject, 'param'], `no API route declares the parameter ":${param}"`);
    }
  }

  const limitChecks = (limits: unknown, base: PropertyKey[]) => {
    const windows = new Map<number, number>();
    asArray(limits).forEach((value, j) => {
      const limit = asObject(value);
      if (!limit) return;
      const windowText = asString(limit.window);
      const windowMs = windowText === undefined ? undefined : tryParseDuration(windowText);
      if (windowMs !== undefined) {
        const first = windows.get(windowMs);
        if (first !== undefined) add([...base, j, 'window'], `a second limit for the window "${windowText}" (limits[${first}] has the same length)`);
        else windows.set(windowMs, j);
      }
      const resolutionText = asString(limit.resolution);
      const bucketMs = resolutionText === undefined ? undefined : tryParseDuration(resolutionText);
      if (windowMs !== undefined && bucketMs !== undefined && (bucketMs > windowMs || windowMs % bucketMs !== 0)) {
        add([...base, j, 'resolution'], `must divide the window "${windowText}" evenly`);
      }
    });
  };

  // Rules: unique ids, one default, known APIs/groups/subjects, each API claimed by one rule.
  const ruleIds = new Map<string, number>();
  const ruleScopes = new Map<string, string[][]>();
  const claimedBy = new Map<string, string>();
  let defaultAt: number | undefined;
  asArray(raw.rules).forEach((value, i) => {
    const rule = asObject(value);
    if (!rule) return;
    const id = asString(rule.id) ?? `rules[${i}]`;
    if (typeof rule.id === 'string') {
      const first = ruleIds.get(rule.id);
      if (first !== undefined) add(['rules', i, 'id'], `duplicate rule id "${rule.id}" (already used by rules[${first}])`);
      else ruleIds.set(rule.id, i);
    }
    const apis = asArray(rule.apis);
    const ruleGroups = asArray(rule.groups);
    const claims = apis.length + ruleGroups.length > 0;
    if (rule.default === true) {
      if (defaultAt !== undefined) add(['rules', i, 'default'], `a second default rule (rules[${defaultAt}] is already the default)`);
      else defaultAt = i;
      if (claims) add(['rules', i], 'a default rule catches every unclaimed request: it must not list apis or groups');
    } else if (!claims) {
      add(['rules', i], 'must list apis or groups, or be the default rule (default: true)');
    }
    const claim = (api: string, path: PropertyKey[]) => {
      const owner = claimedBy.get(api);
      if (owner !== undefined && owner !== id) add(path, `API "${api}" is already limited by rule "${owner}"; an API belongs to one rule`);
      else claimedBy.set(api, id);
    };
    apis.forEach((api, k) => {
      if (typeof api !== 'string') return;
      if (!apiNames.has(api)) add(['rules', i, 'apis', k], `unknown API "${api}" (not declared under apis)`);
      else claim(apiCanonical(raw, apiNames.get(api)!) ?? api, ['rules', i, 'apis', k]);
    });
    ruleGroups.forEach((group, k) => {
      if (typeof group !== 'string') return;
      if (!groups.has(group)) {
        add(['rules', i, 'groups', k], `unknown API group "${group}" (no API declares it as its group)`);
        return;
      }
      asArray(raw.apis).forEach((a) => {
        const api = asObject(a);
        const name = asString(api?.name);
        if (name !== undefined && api?.group === group) claim(name, ['rules', i, 'groups', k]);
      });
    });
    const scope = asString(rule.scope);
    if (scope !== undefined && SCOPE_RE.test(scope)) {
      const parts = parseScope(scope).map((p) => [...p]);
      const seen = new Set<string>();
      for (const subject of parts.flat()) {
        requireSubject(subject, ['rules', i, 'scope']);
        if (seen.has(subject)) add(['rules', i, 'scope'], `subject "${subject}" appears twice in the scope`);
        seen.add(subject);
      }
      if (typeof rule.id === 'string') ruleScopes.set(rule.id, parts);
    }
    limitChecks(rule.limits, ['rules', i, 'limits']);
  });

  // Overrides: a known rule, one value per scope part, limits xor unlimited, one override per key.
  const overrideKeys = new Map<string, number>();
  asArray(raw.overrides).forEach((value, i) => {
    const override = asObject(value);
    if (!override) return;
    const hasLimits = override.limits !== undefined;
    const unlimited = override.unlimited === true;
    if (hasLimits === unlimited) add(['overrides', i], 'must have exactly one of `limits` and `unlimited: true`');
    limitChecks(override.limits, ['overrides', i, 'limits']);
    const rule = asString(override.rule);
    if (rule === undefined) return;
    const scope = ruleScopes.get(rule);
    if (!ruleIds.has(rule)) {
      add(['overrides', i, 'rule'], `unknown rule "${rule}"`);
      return;
    }
    const given = asObject(override.subjects);
    if (!scope || !given) return;
    const used = new Set<string>();
    const key: string[] = [];
    for (const part of scope) {
      const present = part.filter((s) => typeof given[s] === 'string');
      if (present.length !== 1) {
        add(
          ['overrides', i, 'subjects'],
          `must give exactly one of ${part.join(' | ')} (the scope of rule "${rule}" is ${scope.map((p) => p.join('|')).join('+')})`,
        );
        continue;
      }
      used.add(present[0]!);
      key.push(`${present[0]}=${String(given[present[0]!])}`);
    }
    for (const subject of Object.keys(given)) {
      if (!used.has(subject) && !scope.some((p) => p.includes(subject))) {
        add(['overrides', i, 'subjects', subject], `not part of the scope of rule "${rule}"`);
      }
    }
    const k = JSON.stringify([rule, key]);
    const first = overrideKeys.get(k);
    if (first !== undefined) add(['overrides', i], `a second override for the same key (overrides[${first}])`);
    else overrideKeys.set(k, i);
  });

  const messages = asObject(asObject(raw.refusal)?.messages);
  if (messages) {
    const seen = new Map<number, string>();
    for (const window of Object.keys(messages)) {
      const ms = tryParseDuration(window);
      if (ms === undefined) continue;
      const first = seen.get(ms);
      if (first !== undefined) add(['refusal', 'messages', window], `same window length as "${first}"`);
      else seen.set(ms, window);
    }
  }
  return issues;
}

/** The declared name of the API at index i (an alias in a rule counts as its API). */
function apiCanonical(raw: Raw, i: number): string | undefined {
  return asString(asObject(asArray(raw.apis)[i])?.name);
}

/** Validates a parsed document (from YAML or JSON) as a policy; never throws. */
export function validatePolicy(input: unknown): PolicyValidation {
  // zod's records skip a "__proto__" key without a word, so a policy could lose a subject or an
  // override silently: refuse the file instead, naming where the key is.
  const reserved = findReservedKey(input);
  if (reserved)
    return { ok: false, issues: [{ path: formatPath(reserved), message: `"${String(reserved.at(-1))}" is a reserved name and never data; rename it` }] };
  const parsed = PolicySchema.safeParse(input, { reportInput: true });
  const raw = asObject(input);
  const issues = [...(parsed.success ? [] : shapeIssues(parsed.error)), ...(raw ? crossIssues(raw) : [])];
  const unique = issues.filter((issue, i) => issues.findIndex((o) => o.path === issue.path && o.message === issue.message) === i);
  if (unique.length > 0 || !parsed.success) return { ok: false, issues: unique };
  return { ok: true, policy: parsed.data };
}

export function policyInvalid(source: string, issues: PolicyIssue[]): QuotaflowError {
  const lines = issues.map((i) => `  ${i.path || '(document)'}: ${i.message}`);
  return new QuotaflowError('POLICY_INVALID', `policy ${source} is invalid (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}`, {
    hint: 'fix each field listed above; the policy was not loaded',
    details: { source, issues },
  });
}

/** Validates a parsed document; throws QuotaflowError('POLICY_INVALID') listing every problem. */
export function parsePolicy(input: unknown, source = 'policy'): Policy {
  const result = validatePolicy(input);
  if (!result.ok) throw policyInvalid(source, result.issues);
  return result.policy;
}
