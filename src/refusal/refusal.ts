/**
 * What a refused request receives, rendered from the policy's refusal section and the state of the
 * rule's limits. A refusal is a value: nothing here throws or does I/O.
 */
import { tryParseDuration } from '../policy/duration.ts';
import type { Refusal } from '../policy/schema.ts';
import type { CompiledLimit } from '../policy/compile.ts';
import type { LimitState } from '../windows/index.ts';
import { isBlocked, limitName, rateLimitHeaders, remaining, secondsUntil, type LimitReport } from './headers.ts';

export interface RefusalInput {
  /** The policy's refusal section (CompiledPolicy.refusal). */
  refusal: Refusal;
  /** Every limit of the resolved rule with its current state. */
  limits: readonly LimitReport[];
  /** The injected clock (epoch ms). */
  now: number;
  /** Echoed in json_error bodies. */
  requestId?: string;
}

export interface HttpRefusal {
  status: number;
  message: string;
  body: string;
  contentType: string;
  headers: Record<string, string>;
  retryAfterSeconds: number;
  /** The limit the refusal is about: of the blocked ones, the one with room again last. */
  blocking: LimitReport;
}

/** The state of one compiled limit, for refuse/admittedHeaders. */
export function limitState(limit: CompiledLimit, count: number, resetAt: number, blocked?: boolean): LimitReport {
  const state: LimitReport = { limit: limit.limit, windowMs: limit.windowMs, name: limit.name, count, resetAt };
  if (blocked !== undefined) state.blocked = blocked;
  return state;
}

/** Fills `{retry_after}`, `{limit}`, `{window}`; unknown placeholders are left as written. */
export function renderMessage(template: string, values: Record<string, string | number>): string {
  return template.replace(/\{([a-z_]+)\}/g, (whole, name: string) => (name in values ? String(values[name]) : whole));
}

/** The policy's message for a window (its own entry in `messages`, else `message`), not yet rendered. */
export function messageTemplate(refusal: Refusal, windowMs: number): string {
  for (const [window, text] of Object.entries(refusal.messages ?? {})) {
    if (tryParseDuration(window) === windowMs) return text;
  }
  return refusal.message;
}

/** The blocking limit: blocked ones first, the latest to have room again; if none is blocked, the least room. */
function blockingLimit(limits: readonly LimitReport[]): LimitReport {
  let best: LimitReport | undefined;
  for (const s of limits) {
    if (!best) best = s;
    else if (isBlocked(s) !== isBlocked(best)) {
      if (isBlocked(s)) best = s;
    } else if (isBlocked(s) ? s.resetAt > best.resetAt : remaining(s) < remaining(best)) best = s;
  }
  if (!best) throw new TypeError('refuse() needs the state of at least one limit');
  return best;
}

/** The body in the policy's format: the message as text, or {"error":{"code","message","request_id"}}. */
export function renderBody(refusal: Refusal, code: string, message: string, requestId: string | undefined): { body: string; contentType: string } {
  if (refusal.body !== 'json_error') return { body: message, contentType: 'text/plain; charset=utf-8' };
  const error: Record<string, string> = { code, message };
  if (requestId !== undefined) error.request_id = requestId;
  return { body: JSON.stringify({ error }, null, refusal.json_indent), contentType: 'application/json' };
}

export interface UnidentifiedRefusal {
  status: number;
  message: string;
  body: string;
  contentType: string;
}

/**
 * What a request gets when its rule's subjects are absent and the rule says `refuse`: the rule's
 * status and message (`{missing}` filled in) in the policy's body format. No rate-limit headers:
 * without its subjects the request has no counter to report on.
 */
export function refuseUnidentified(
  refusal: Refusal,
  rule: { status: number; message: string; error_code: string },
  missing: readonly string[],
  requestId?: string,
): UnidentifiedRefusal {
  const message = renderMessage(rule.message, { missing: missing.join(', ') });
  return { status: rule.status, message, ...renderBody(refusal, rule.error_code, message, requestId) };
}

export function refuse(input: RefusalInput): HttpRefusal {
  const { refusal, now } = input;
  const blocking = blockingLimit(input.limits);
  // A refusal always asks for at least a second: "0" would invite an immediate retry into a stale block.
  const retryAfterSeconds = Math.max(1, secondsUntil(blocking.resetAt, now));
  const message = renderMessage(messageTemplate(refusal, blocking.windowMs), {
    retry_after: retryAfterSeconds,
    limit: blocking.limit,
    window: limitName(blocking),
  });
  const { body, contentType } = renderBody(refusal, refusal.error_code, message, input.requestId);
  const headers = rateLimitHeaders({
    families: refusal.headers,
    limits: input.limits,
    now,
    xRateLimitWindowMs: xRateLimitWindowMs(refusal),
    retryAfterSeconds,
    refusedUntil: blocking.resetAt,
  });
  return { status: refusal.status, message, body, contentType, headers, retryAfterSeconds, blocking };
}

/** Headers for an admitted response: the policy's families, without Retry-After. */
/** The policy's x_ratelimit_window in ms, parsed once per refusal section (headers are rendered on every check). */
const windowMsOf = new WeakMap<object, number | undefined>();
function xRateLimitWindowMs(refusal: { x_ratelimit_window?: string | undefined }): number | undefined {
  if (refusal.x_ratelimit_window === undefined) return undefined;
  if (!windowMsOf.has(refusal)) windowMsOf.set(refusal, tryParseDuration(refusal.x_ratelimit_window));
  return windowMsOf.get(refusal);
}

export function admittedHeaders(input: Omit<RefusalInput, 'requestId'>): Record<string, string> {
  return rateLimitHeaders({
    families: input.refusal.headers,
    limits: input.limits,
    now: input.now,
    xRateLimitWindowMs: xRateLimitWindowMs(input.refusal),
  });
}

/** A header/refusal LimitReport from src/windows' state: a reached limit is reported with its `until`. */
export function fromWindowState(limit: CompiledLimit, state: Pick<LimitState, 'count' | 'reached' | 'reset' | 'until'>): LimitReport {
  return limitState(limit, state.count, state.reached ? state.until : state.reset, state.reached);
}
