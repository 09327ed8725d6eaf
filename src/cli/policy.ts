/**
 * `quotaflow policy validate|explain`: check policy files, and show how one request resolves
 * (API, rule and why, counter key, tenant, limits) and what its refusal would look like.
 */
import { QuotaflowError, isQuotaflowError } from '../errors.ts';
import { EXIT, type CommandIO } from './command.ts';
import { defineCommand } from './define.ts';
import { SHARED } from './settings.ts';
import {
  compilePolicy,
  loadPolicyFile,
  resolve,
  type CompiledLimit,
  type CompiledPolicy,
  type PolicyIssue,
  type Resolved,
  type ResolveRequest,
} from '../policy/index.ts';
import { admittedHeaders, limitState, refuse, refuseUnidentified, type HttpRefusal } from '../refusal/index.ts';
import type { CompiledRule } from '../policy/index.ts';

function usage(message: string): QuotaflowError {
  return new QuotaflowError('USAGE', message, { hint: 'run `quotaflow policy --help` for usage and examples' });
}

/** --now: epoch milliseconds, else the current time. */
function nowFrom(text: string | undefined): number {
  if (text === undefined) return Date.now();
  const now = Number(text);
  if (!Number.isSafeInteger(now) || now < 0) throw usage('--now must be epoch milliseconds');
  return now;
}

async function validate(files: string[], json: boolean, io: CommandIO): Promise<number> {
  const results: { file: string; ok: boolean; summary?: string; issues?: PolicyIssue[] }[] = [];
  for (const file of files) {
    try {
      const policy = compilePolicy(await loadPolicyFile(file));
      const defaults = policy.rules.filter((r) => r.isDefault).length;
      const summary =
        `${policy.product} v${policy.version}: ${policy.apis.length} APIs, ${policy.rules.length} rules` +
        `${defaults ? ' (1 default)' : ''}, ${policy.policy.overrides.length} overrides, tenant ${policy.tenant.join('|')}`;
      results.push({ file, ok: true, summary });
    } catch (e) {
      if (!isQuotaflowError(e) || e.code !== 'POLICY_INVALID') throw e;
      results.push({ file, ok: false, issues: (e.details?.issues as PolicyIssue[] | undefined) ?? [{ path: '', message: e.message }] });
    }
  }
  if (json) io.out(JSON.stringify(results, null, 2));
  else {
    for (const r of results) {
      if (r.ok) io.out(`ok    ${r.file}  ${r.summary}`);
      else {
        io.out(`FAIL  ${r.file}  ${r.issues!.length} problem${r.issues!.length === 1 ? '' : 's'}:`);
        for (const i of r.issues!) io.out(`        ${i.path || '(document)'}: ${i.message}`);
      }
    }
  }
  return results.every((r) => r.ok) ? EXIT.OK : EXIT.FAILURE;
}

/** The request id a preview shows where the gateway would send the client's or a minted one. */
const EXAMPLE_ID = 'req_example';

/** Where a limit's counter would have room again if it were reached right now. */
function resetAtIfReached(limit: CompiledLimit, now: number): number {
  if (limit.kind === 'fixed') return Math.floor(now / limit.windowMs) * limit.windowMs + limit.windowMs;
  return now + limit.windowMs;
}

/** The refusal a request would get if only `blocked` were reached (the other limits one short of theirs). */
function previewRefusal(policy: CompiledPolicy, limits: readonly CompiledLimit[], blocked: number, now: number): HttpRefusal {
  const states = limits.map((l, i) => limitState(l, i === blocked ? l.limit : l.limit - 1, resetAtIfReached(l, now)));
  const requestId = policy.requestId.mint === 'never' ? undefined : EXAMPLE_ID;
  const refusal = refuse({ refusal: policy.refusal, limits: states, now, requestId });
  if (requestId !== undefined) refusal.headers[policy.requestId.responseHeader] = requestId;
  return refusal;
}

/** What the rule does with a request whose subjects are absent, in a line. */
function describeUnidentified(policy: CompiledPolicy, rule: CompiledRule): string {
  const u = rule.unidentified;
  const from = rule.source.unidentified ? "the rule's setting" : "the policy's `unidentified`";
  const subjects = rule.scopeText;
  if (u.action === 'refuse') {
    const preview = refuseUnidentified(policy.refusal, u, [subjects]);
    return `${subjects}: refused with HTTP ${u.status} ("${preview.message}") — ${from}`;
  }
  if (u.action === 'anonymous') return `${subjects}: counted as ${JSON.stringify(u.value)} — ${from}`;
  return `${subjects}: admitted, counted against no limit — ${from}`;
}

function whyRule(policy: CompiledPolicy, r: Resolved): string {
  const def = policy.defaultRule;
  if (r.precedence === 'default') {
    return r.api ? `no rule names API "${r.api.name}", so the default rule applies` : 'the request matches no named API, so the default rule applies';
  }
  const via = r.rule.source.apis?.includes(r.api!.name) ? 'by name' : `through its group "${r.api!.group}"`;
  return `rule "${r.rule.id}" names API "${r.api!.name}" ${via}; a rule naming the API beats ${def ? `the default rule "${def.id}"` : 'a default (this policy has none)'}`;
}

interface ExplainArgs {
  file: string;
  request: string | undefined;
  now: number;
  json: boolean;
}

async function explain(args: ExplainArgs, io: CommandIO): Promise<number> {
  const { file } = args;
  if (args.request === undefined) throw usage('policy explain needs --request JSON');
  let request: ResolveRequest;
  try {
    request = JSON.parse(args.request) as ResolveRequest;
  } catch (cause) {
    throw new QuotaflowError('USAGE', `--request is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  if (request === null || typeof request !== 'object') throw usage('--request must be a JSON object');
  if (request.headers) {
    // HTTP header names are case-insensitive; resolve() takes them lower-cased, as Node presents them.
    request = { ...request, headers: Object.fromEntries(Object.entries(request.headers).map(([k, v]) => [k.toLowerCase(), v])) };
  }
  const { now } = args;
  const policy = compilePolicy(await loadPolicyFile(file));
  const r = resolve(policy, request);

  if (r.kind === 'unresolved') {
    const unidentified = r.rule && r.missing.length > 0 ? r.rule.unidentified : undefined;
    const refusal =
      unidentified?.action === 'refuse'
        ? refuseUnidentified(policy.refusal, unidentified, r.missing, policy.requestId.mint === 'never' ? undefined : EXAMPLE_ID)
        : undefined;
    if (args.json) {
      io.out(
        JSON.stringify(
          {
            kind: r.kind,
            reason: r.reason,
            api: r.api?.name ?? null,
            rule: r.rule?.id ?? null,
            missing: r.missing,
            unidentified: unidentified ?? null,
            ...(refusal ? { refusal: { status: refusal.status, contentType: refusal.contentType, body: refusal.body } } : {}),
          },
          null,
          2,
        ),
      );
    } else {
      io.out(`unresolved: ${r.reason}`);
      if (r.rule && unidentified) io.out(`absent    ${describeUnidentified(policy, r.rule)}`);
      if (refusal) {
        const id = policy.requestId.mint === 'never' ? [] : [`  ${policy.requestId.responseHeader}: ${EXAMPLE_ID}`];
        io.out(
          ['', `  HTTP ${refusal.status}`, `  Content-Type: ${refusal.contentType}`, ...id, '', ...refusal.body.split('\n').map((l) => `  ${l}`)].join('\n'),
        );
      }
    }
    return EXIT.FAILURE;
  }

  const apiWhy =
    r.apiMatchedBy === 'name'
      ? `named in the request`
      : r.apiMatchedBy === 'route'
        ? `matched ${(request.method ?? 'GET').toUpperCase()} ${request.path}` +
          (Object.keys(r.params).length
            ? ` (params ${Object.entries(r.params)
                .map(([k, v]) => `${k}=${v}`)
                .join(', ')})`
            : '')
        : request.api !== undefined
          ? `no API is named "${request.api}"`
          : 'no route matched';
  const limitsWhy = r.limitsFrom === 'rule' ? `the rule's (no override for ${r.scopeKey})` : `${r.limitsFrom} for ${r.scopeKey} beats the rule's limits`;
  const refusals = r.unlimited ? [] : r.limits.map((_, i) => previewRefusal(policy, r.limits, i, now));
  const admitted = r.unlimited
    ? {}
    : admittedHeaders({ refusal: policy.refusal, limits: r.limits.map((l) => limitState(l, 1, resetAtIfReached(l, now))), now });

  if (args.json) {
    io.out(
      JSON.stringify(
        {
          kind: r.kind,
          policy: { file, product: policy.product, version: policy.version },
          api: r.api?.name ?? null,
          apiMatchedBy: r.apiMatchedBy,
          params: r.params,
          rule: r.rule.id,
          precedence: r.precedence,
          why: whyRule(policy, r),
          scope: r.scope,
          tenant: r.tenant,
          tenantKey: r.tenantKey,
          counterKey: r.counterKey,
          scopeKey: r.scopeKey,
          limitsFrom: r.limitsFrom,
          unlimited: r.unlimited,
          shadow: r.shadow,
          anonymous: r.anonymous,
          unidentified: r.rule.unidentified,
          limits: r.limits.map(({ limit, window, windowMs, kind, bucketMs, name }) => ({ limit, window, windowMs, kind, bucketMs, name })),
          now,
          admittedHeaders: admitted,
          refusals: refusals.map((x) => ({
            window: r.limits.find((l) => l.windowMs === x.blocking.windowMs)?.window,
            status: x.status,
            headers: x.headers,
            contentType: x.contentType,
            body: x.body,
          })),
        },
        null,
        2,
      ),
    );
    return EXIT.OK;
  }

  const lines = [
    `policy    ${file} — ${policy.product}, version ${policy.version}`,
    `api       ${r.api ? `"${r.api.name}"` : '(none)'} — ${apiWhy}`,
    `rule      "${r.rule.id}" — ${whyRule(policy, r)}`,
    `scope     ${r.rule.scopeText} → ${r.scope.map((s) => `${s.subject}=${JSON.stringify(s.value)}`).join(', ')}`,
    `tenant    ${policy.tenant.join('|')} → ${r.tenant.subject}=${JSON.stringify(r.tenant.value)} (key ${r.tenantKey})`,
    `counter   ${r.counterKey}${r.rule.perApi ? ' (per API)' : ''}`,
    `limits    ${r.unlimited ? 'unlimited' : r.limits.map((l) => `${l.limit} per ${l.window} (${l.kind}, buckets of ${l.bucketMs} ms)`).join('; ')} — from ${limitsWhy}`,
    `shadow    ${r.shadow ? 'yes: decided and audited, never refused' : 'no'}`,
    `absent    ${describeUnidentified(policy, r.rule)}${r.anonymous ? ' (as in this request)' : ''}`,
  ];
  if (!r.unlimited) {
    lines.push('', `admitted response headers (first request of each window):`);
    for (const [k, v] of Object.entries(admitted)) lines.push(`  ${k}: ${v}`);
    refusals.forEach((x, i) => {
      lines.push('', `refusal when the ${r.limits[i]!.window} limit is reached (at ${new Date(now).toISOString()}):`);
      lines.push(`  HTTP ${x.status}`, `  Content-Type: ${x.contentType}`);
      for (const [k, v] of Object.entries(x.headers)) lines.push(`  ${k}: ${v}`);
      lines.push('', ...x.body.split('\n').map((l) => `  ${l}`));
    });
  }
  io.out(lines.join('\n'));
  return EXIT.OK;
}

export const policyCommand = defineCommand({
  name: 'policy',
  summary: 'validate policy files; explain how a request resolves and would be refused',
  usage: ['quotaflow policy validate FILE... [--json]', 'quotaflow policy explain FILE --request JSON [--now EPOCH_MS] [--json]'],
  description: 'Checks policy files and explains how requests resolve.',
  subcommands: [
    {
      name: 'validate',
      operands: 'FILE...',
      help: `Parses and validates each file (YAML or JSON). Exit 0 with a one-line summary per file,
or exit 1 listing every bad field by its path (e.g. rules[2].limits[0].window).`,
    },
    {
      name: 'explain',
      operands: 'FILE',
      help: `Resolves one request: which API and rule matched and why (the precedence), the counter
key, the tenant, the limits and windows, and what a refusal would look like for each limit
(status, headers, body) at --now (default: the current time). Exit 1 if it cannot resolve.
The request is {"method","path"} or {"api"}, plus "subjects", "headers" (any case)
and "query" objects.`,
    },
  ],
  options: {
    request: { type: 'string', value: 'JSON', help: 'explain: the request to resolve' },
    now: { type: 'string', value: 'EPOCH_MS', help: 'explain: the time the refusals are shown at (default: now)' },
    json: SHARED.json,
  },
  examples: [
    'quotaflow policy validate policies/*.yaml',
    `quotaflow policy explain policies/bolna.yaml \\
    --request '{"method":"GET","path":"/v2/agent/42/executions","subjects":{"organization":"acme","user":"u1"}}'`,
    `quotaflow policy explain policies/kore-automation-ai.yaml \\
    --request '{"api":"Bot Export","subjects":{"account":"a1","bot":"st-1"}}'`,
    `quotaflow policy explain policies/talkpilot.yaml --request '{"path":"/agents","headers":{"x-api-key":"tp_1"}}' --json`,
  ],
  exitCodes: { 0: 'every file is valid (validate), the request resolves (explain)', 1: 'a file is invalid, or the request does not resolve', 2: 'bad usage' },
  async run({ values, subcommand, operands, io }) {
    const json = values.json ?? false;
    if (subcommand === 'validate') return validate(operands, json, io);
    return explain({ file: operands[0]!, request: values.request, now: nowFrom(values.now), json }, io);
  },
});
