/**
 * Rate-limit response headers. Three families, chosen per policy (refusal.headers):
 *  - x-ratelimit: X-RateLimit-Limit / -Remaining / -Reset (unix seconds) for one limit (TalkPilot's).
 *  - retry-after: Retry-After in whole seconds, on refusals only.
 *  - ietf: RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers), listing every limit.
 */
import type { HeaderFamily } from '../policy/schema.ts';
import { windowName } from '../windows/index.ts';

/** One limit of the resolved rule and where its counter stands. */
export interface LimitReport {
  limit: number;
  windowMs: number;
  /** Name in the IETF fields ("minute"); default derived from the window. */
  name?: string;
  /** Requests counted in the window (including the one being checked, if admitted). */
  count: number;
  /** Epoch ms when this window has room again (a block's `until`) or next resets. */
  resetAt: number;
  /** Set from a cached block decision; by default a limit is blocked when count ≥ limit. */
  blocked?: boolean;
}

export function limitName(state: Pick<LimitReport, 'name' | 'windowMs'>): string {
  return state.name ?? windowName(state.windowMs);
}

export const remaining = (s: LimitReport): number => (isBlocked(s) ? 0 : Math.max(0, s.limit - s.count));
export const isBlocked = (s: LimitReport): boolean => s.blocked ?? s.count >= s.limit;
/** Whole seconds from now until `at`, rounded up, never negative. */
export const secondsUntil = (at: number, now: number): number => Math.max(0, Math.ceil((at - now) / 1000));

/** An sf-string (RFC 9651 §3.3.3): quoted, with `\` and `"` escaped. */
function sfString(text: string): string {
  return `"${text.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/**
 * The IETF fields for all limits of a rule, per draft-ietf-httpapi-ratelimit-headers (-09/-10):
 *   RateLimit-Policy: "minute";q=60;w=60, "hour";q=1000;w=3600
 *   RateLimit: "minute";r=0;t=18, "hour";r=958;t=2400
 * q = quota, w = window (s), r = remaining, t = seconds until the quota resets.
 */
export function ietfFields(limits: readonly LimitReport[], now: number): { 'RateLimit-Policy': string; RateLimit: string } {
  const policy: string[] = [];
  const state: string[] = [];
  for (const s of limits) {
    const name = sfString(limitName(s));
    policy.push(`${name};q=${s.limit};w=${Math.ceil(s.windowMs / 1000)}`);
    state.push(`${name};r=${remaining(s)};t=${secondsUntil(s.resetAt, now)}`);
  }
  return { 'RateLimit-Policy': policy.join(', '), RateLimit: state.join(', ') };
}

/** The limit X-RateLimit-* describe: the configured window, else the one with the least room (shortest window on ties). */
export function xRateLimitSubject(limits: readonly LimitReport[], windowMs: number | undefined): LimitReport | undefined {
  if (windowMs !== undefined) {
    const configured = limits.find((s) => s.windowMs === windowMs);
    if (configured) return configured;
  }
  let best: LimitReport | undefined;
  for (const s of limits) {
    if (!best || remaining(s) < remaining(best) || (remaining(s) === remaining(best) && s.windowMs < best.windowMs)) best = s;
  }
  return best;
}

export interface HeaderInput {
  families: readonly HeaderFamily[];
  limits: readonly LimitReport[];
  now: number;
  xRateLimitWindowMs: number | undefined;
  /** Present on refusals only. */
  retryAfterSeconds?: number;
  /** On refusals, when the blocking limit has room again (epoch ms). */
  refusedUntil?: number;
}

/** Response headers in the order the seed documents print them: Retry-After, X-RateLimit-*, then the IETF fields. */
export function rateLimitHeaders(input: HeaderInput): Record<string, string> {
  const headers: Record<string, string> = {};
  if (input.retryAfterSeconds !== undefined && input.families.includes('retry-after')) {
    headers['Retry-After'] = String(input.retryAfterSeconds);
  }
  const subject = input.families.includes('x-ratelimit') ? xRateLimitSubject(input.limits, input.xRateLimitWindowMs) : undefined;
  if (subject) {
    headers['X-RateLimit-Limit'] = String(subject.limit);
    // A refused client has nothing left, whichever limit refused it, and must not be told to come back
    // when the minute resets if the hour is what blocks it.
    const refused = input.refusedUntil !== undefined;
    headers['X-RateLimit-Remaining'] = String(refused ? 0 : remaining(subject));
    headers['X-RateLimit-Reset'] = String(Math.ceil(Math.max(subject.resetAt, input.refusedUntil ?? 0) / 1000));
  }
  if (input.families.includes('ietf') && input.limits.length > 0) Object.assign(headers, ietfFields(input.limits, input.now));
  return headers;
}
