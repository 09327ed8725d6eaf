/**
 * The policy file, declared once as zod schemas. Types are inferred from these, and
 * `schemas/policy.schema.json` is generated from them (`npm run schemas`). Shape checks live here;
 * checks that need the whole file (unknown API names, duplicate routes, ...) live in validate.ts.
 */
import { z } from 'zod';
import { DURATION_PATTERN } from './duration.ts';
import { NOT_RESERVED_PATTERN } from '../events/reserved.ts';

const DURATION_MESSAGE = 'must be a positive duration like "60s" (a whole number and one of ms, s, m, h, d)';

export const DurationSchema = z
  .string()
  .regex(new RegExp(DURATION_PATTERN), DURATION_MESSAGE)
  .describe('A positive length of time: a whole number and one unit, e.g. "500ms", "60s", "1m", "1h", "1d".');

export const SUBJECT_NAME_PATTERN = `${NOT_RESERVED_PATTERN}[a-z][a-z0-9_]*$`;
export const SubjectNameSchema = z
  .string()
  .regex(new RegExp(SUBJECT_NAME_PATTERN), 'must be a subject name like "api_key" (lowercase letters, digits and _; not constructor or prototype)')
  .describe('A subject: one thing a request is counted against (api_key, account, bot, organization, user, table, request_id...).');

export const SubjectSourceSchema = z
  .strictObject({
    header: z.string().min(1).optional().describe('HTTP request header carrying the value (case-insensitive), e.g. "X-API-Key". Tried first.'),
    param: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a route parameter name like "agent_id"')
      .optional()
      .describe('Route parameter carrying the value, as named in an API route (":agent_id"). Tried second.'),
    query: z.string().min(1).optional().describe('Query-string parameter carrying the value. Tried third.'),
    description: z.string().optional().describe('What this subject is, for people reading the policy.'),
  })
  .describe(
    "Where the HTTP sidecar reads a subject. A value passed in the SDK's `subjects` object always wins; " +
      'with no header/param/query the subject can only be passed by the caller.',
  );

/** `bot`, `account+table`, `organization|user`: `+` joins parts of a composite key, `|` is a fallback chain. */
export const SCOPE_PATTERN = '^[a-z][a-z0-9_]*([+|][a-z][a-z0-9_]*)*$';
export const ScopeSchema = z
  .string()
  .regex(new RegExp(SCOPE_PATTERN), 'must be subjects joined by "+" (all of them) or "|" (first present), like "account+table" or "organization|user"')
  .describe(
    'The subjects that form the counting key. "+" joins a composite key ("account+table"); "|" is a fallback ' +
      'chain, first present wins ("organization|user"); "|" binds tighter than "+".',
  );

export const TENANT_PATTERN = '^[a-z][a-z0-9_]*([|][a-z][a-z0-9_]*)*$';
export const TenantSchema = z
  .string()
  .regex(new RegExp(TENANT_PATTERN), 'must be a subject or a fallback chain like "organization|user"')
  .describe(
    'The top subject (or fallback chain, first present wins): the Kafka key of usage events and the Redis ' +
      "Cluster hash tag of every counter, so all of a tenant's counters share one partition and one slot.",
  );

export const ROUTE_PATTERN = '^(\\*|[A-Z]+) /\\S*$';
export const RouteSchema = z
  .string()
  .regex(new RegExp(ROUTE_PATTERN), 'must be "METHOD /path" like "GET /v2/agent/:agent_id" (METHOD may be *)')
  .describe(
    'A method and a route pattern, e.g. "GET /v2/agent/:agent_id/executions". "*" matches any method; ' +
      '":name" or "{name}" segments are parameters; a literal segment beats a parameter.',
  );

export const ApiSchema = z
  .strictObject({
    name: z.string().min(1).describe("The API's name as the product documents it; callers may pass it as `api`."),
    group: z.string().min(1).optional().describe('The documented group this API belongs to ("Bot Definition APIs"); rules may name groups.'),
    aliases: z.array(z.string().min(1)).optional().describe("Other spellings found in the product's documents that resolve to this API."),
    routes: z
      .array(RouteSchema)
      .optional()
      .describe('Method + route patterns matching this API. Omit when the product names APIs without routes: callers then pass `api`.'),
    description: z.string().optional().describe('Free text for people reading the policy.'),
  })
  .describe('A named API (or documented API group) that requests resolve to.');

export const WindowKindSchema = z
  .enum(['rolling', 'fixed'])
  .describe('rolling: a sliding window over event time; fixed: aligned to multiples of the window length since the Unix epoch (UTC).');

export const LimitSchema = z
  .strictObject({
    limit: z.number().int('must be a whole number').positive('must be a positive whole number').describe('Requests (cost units) allowed per window.'),
    window: DurationSchema.describe('The window length, e.g. "60s", "1h".'),
    kind: WindowKindSchema.default('rolling'),
    resolution: DurationSchema.optional().describe('Bucket length used to count the window; must divide the window. Default: window / 60.'),
    name: z
      .string()
      .regex(/^[a-z][a-z0-9_-]*$/, 'must be a lowercase token like "minute"')
      .optional()
      .describe('Name of this limit in the IETF RateLimit-Policy field. Default: minute/hour/day/second, else the window.'),
  })
  .describe('One limit of a rule; all limits of a rule apply at once.');

export const UnidentifiedSchema = z
  .discriminatedUnion('action', [
    z
      .strictObject({ action: z.literal('admit').describe('Let the request through, counted against no limit (and say so: reason "unresolved").') })
      .describe('Admit uncounted.'),
    z
      .strictObject({
        action: z.literal('refuse').describe("Answer the request here, with this status and message, in the policy's body format."),
        status: z.number().int().min(400).max(599).default(401).describe('HTTP status of the refusal, e.g. 401 (no credentials) or 400.'),
        message: z
          .string()
          .min(1)
          .default('Missing {missing}: this request cannot be counted against its rate limit.')
          .describe('The message; {missing} is replaced by the subjects that were absent ("api_key", "organization|user").'),
        error_code: z.string().min(1).default('UNIDENTIFIED').describe('The `code` of a json_error body.'),
      })
      .describe('Refuse.'),
    z
      .strictObject({
        action: z.literal('anonymous').describe('Count the request under an explicit anonymous key: each absent scope part takes `value`.'),
        value: z.string().min(1).default('anonymous').describe('The value an absent subject takes (for a fallback chain, its last subject).'),
      })
      .describe('Count as anonymous.'),
  ])
  .describe(
    'What happens to a request the rule applies to but whose subjects are absent (no API key, neither organization nor user): ' +
      'refuse it, count it under an anonymous key, or admit it uncounted.',
  );

export const RuleSchema = z
  .strictObject({
    id: z
      .string()
      .regex(/^[a-z0-9][a-z0-9_.-]*$/, 'must be a lowercase id like "bot-definition"')
      .describe('Stable id of the rule: part of every counter key and of decisions; renaming it resets its counters.'),
    description: z.string().optional().describe('What the rule implements, e.g. which row of which document.'),
    apis: z.array(z.string().min(1)).optional().describe('API names this rule limits.'),
    groups: z.array(z.string().min(1)).optional().describe('API groups this rule limits (every API whose `group` is listed).'),
    default: z.boolean().optional().describe('true for the rule that catches every request no other rule claims (at most one per policy).'),
    scope: ScopeSchema,
    per_api: z
      .boolean()
      .default(false)
      .describe("true: each API under this rule has its own counter (the API is part of the key); false: the rule's APIs share one counter."),
    limits: z.array(LimitSchema).min(1, 'must list at least one limit').describe('The limits; a request is refused when any is reached.'),
    shadow: z.boolean().default(false).describe('true: decide and audit, but never refuse (to try a rule on live traffic).'),
    unidentified: UnidentifiedSchema.optional().describe("What happens when this rule's subjects are absent. Default: the policy's `unidentified`."),
  })
  .describe('A scope and its limits, for some APIs or as the default.');

export const PolicyOverrideSchema = z
  .strictObject({
    rule: z.string().min(1).describe('Id of the rule whose limits this replaces.'),
    subjects: z
      .record(SubjectNameSchema, z.string())
      .describe("The key: one value for each part of the rule's scope (for a chain, the subject that is present)."),
    limits: z.array(LimitSchema).min(1, 'must list at least one limit').optional().describe("Custom limits replacing the rule's."),
    unlimited: z.literal(true).optional().describe('true: this key is never counted against a limit.'),
    reason: z.string().optional().describe('Why (a support ticket, a contract).'),
  })
  .describe('Custom limits (or unlimited) for one key of one rule. Exactly one of `limits` and `unlimited`.');

export const HeaderFamilySchema = z
  .enum(['x-ratelimit', 'retry-after', 'ietf'])
  .describe('x-ratelimit: X-RateLimit-Limit/Remaining/Reset; retry-after: Retry-After on refusals; ietf: RateLimit-Policy and RateLimit.');

export const RequestIdSchema = z
  .strictObject({
    header: z
      .string()
      .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'must be an HTTP header name like "X-Request-Id"')
      .default('X-Request-Id')
      .describe("The header a client's request id arrives in, and the one a minted id is sent back in."),
    prefix: z
      .string()
      .regex(/^[A-Za-z0-9_.-]*$/, 'must be letters, digits, "_", "." or "-"')
      .default('req_')
      .describe('Minted ids are this prefix and 16 lowercase letters and digits, e.g. "req_k2f9x0qa3m1c7d5e".'),
    mint: z
      .enum(['refusals', 'always', 'never'])
      .default('refusals')
      .describe(
        'When a request without an id gets one: refusals (its body, the response header and its usage event carry it), ' +
          "always (every response and usage event; coalescing then never applies), never (only a client's own id is echoed).",
      ),
  })
  .describe('Request ids, in the style of the product\'s documents ("request_id": "req_abc123").');

export const RefusalSchema = z
  .strictObject({
    status: z.number().int().min(400).max(599).default(429).describe('HTTP status of a refusal.'),
    body: z.enum(['plain', 'json_error']).default('plain').describe('plain: the message as text; json_error: {"error":{"code","message","request_id"}}.'),
    message: z.string().min(1).describe('Message template used when no per-window message applies. Placeholders: {retry_after} (seconds), {limit}, {window}.'),
    messages: z
      .record(DurationSchema, z.string().min(1))
      .optional()
      .describe('Message template per window length ("60s", "1h"), for products with one message per window.'),
    error_code: z.string().min(1).default('RATE_LIMITED').describe('The `code` of a json_error body.'),
    json_indent: z.number().int().min(0).max(8).default(2).describe('Indentation of a json_error body (0: one line).'),
    headers: z
      .array(HeaderFamilySchema)
      .default(['retry-after', 'ietf'])
      .describe('Header families sent with refusals (and, minus Retry-After, with admitted responses).'),
    x_ratelimit_window: DurationSchema.optional().describe(
      'Which limit the X-RateLimit-* headers describe (e.g. "60s": "maximum requests per minute"). Default: the limit with the least room.',
    ),
    request_id: RequestIdSchema.optional().describe(
      'Request ids: read from a header, minted when absent, echoed in json_error bodies. Default: header X-Request-Id, prefix "req_", ' +
        'minted on refusals when the body is json_error (it has a request_id field), never otherwise.',
    ),
  })
  .describe('What a refused request receives.');

export const PolicySchema = z
  .strictObject({
    $schema: z.string().optional().describe('Path or URL of policy.schema.json, for editors.'),
    version: z.string().min(1).describe('Version of this policy; recorded in every decision.'),
    product: z.string().min(1).describe('The product or API this policy limits.'),
    description: z.string().optional().describe('Free text, e.g. which documents the policy follows.'),
    identity: z.record(SubjectNameSchema, SubjectSourceSchema).describe('Every subject the policy uses, and where the HTTP sidecar reads it.'),
    tenant: TenantSchema,
    apis: z.array(ApiSchema).default([]).describe('Named APIs; a request resolves to at most one.'),
    rules: z.array(RuleSchema).min(1, 'must list at least one rule').describe("Rules; the rule naming a request's API wins over the default rule."),
    overrides: z.array(PolicyOverrideSchema).default([]).describe('Per-key custom limits shipped with the policy (runtime ones come from quota.overrides).'),
    refusal: RefusalSchema,
    unidentified: UnidentifiedSchema.default({ action: 'admit' }).describe(
      'What happens, under every rule without its own `unidentified`, to a request whose subjects are absent. Default: admit uncounted.',
    ),
  })
  .describe('A quotaflow policy: who is counted, for which APIs, against which limits, and what a refusal looks like.');

export type SubjectSource = z.infer<typeof SubjectSourceSchema>;
export type Api = z.infer<typeof ApiSchema>;
export type WindowKind = z.infer<typeof WindowKindSchema>;
export type Limit = z.infer<typeof LimitSchema>;
export type Rule = z.infer<typeof RuleSchema>;
export type PolicyOverride = z.infer<typeof PolicyOverrideSchema>;
export type HeaderFamily = z.infer<typeof HeaderFamilySchema>;
export type Refusal = z.infer<typeof RefusalSchema>;
export type RequestId = z.infer<typeof RequestIdSchema>;
export type Unidentified = z.infer<typeof UnidentifiedSchema>;
export type Policy = z.infer<typeof PolicySchema>;
/** A policy as written, before defaults are applied. */
export type PolicyInput = z.input<typeof PolicySchema>;
