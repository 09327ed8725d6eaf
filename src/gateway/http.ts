/**
 * HTTP middleware for Node servers, in the plain node:http handler shape `(req, res, next)` so Express,
 * Connect, Fastify (through an onRequest hook: `fastifyOnRequest` below) and bare `http.createServer`
 * can all use it.
 *
 * Admitted: sets the policy's rate-limit headers on the response and calls `next()`.
 * Refused: answers with the policy's status, body and headers (Retry-After, X-RateLimit-*, IETF
 * fields) and does not call `next()`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isReservedKey } from '../events/reserved.ts';
import type { CheckRequest, CheckResult, Gateway } from './gateway.ts';

export interface MiddlewareOptions {
  /** Extra subjects from the request (a session, a verified token); they win over the policy's identity. */
  subjects?: (req: IncomingMessage) => Record<string, string | undefined> | undefined;
  /** Header carrying the client's request id. Default: the policy's (refusal.request_id.header, X-Request-Id). */
  requestIdHeader?: string;
  /**
   * Read the API and subjects from `X-Quotaflow-Api` (percent-encoded if not ASCII) and `X-Quotaflow-Subjects` (URL-encoded:
   * `account=acc-1&bot=st-9`). For callers that check on behalf of a client (another gateway asking
   * the sidecar), and for policies whose APIs have no routes. Off by default: a client could set them.
   */
  checkHeaders?: boolean;
  /** Called with every result, e.g. to log refusals. */
  onResult?: (result: CheckResult, req: IncomingMessage) => void;
}

export const API_HEADER = 'x-quotaflow-api';
export const SUBJECTS_HEADER = 'x-quotaflow-subjects';

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** A request the check cannot even be asked about: answered 400 with the reason. */
export interface BadCheckRequest {
  bad: string;
}

export const isBadCheckRequest = (r: CheckRequest | BadCheckRequest): r is BadCheckRequest => 'bad' in r;

/**
 * The check request for an incoming HTTP request: method, path without the query, headers, query;
 * or, when the X-Quotaflow-* headers it was told to read are unusable, why.
 */
export function checkRequestOf(req: IncomingMessage, opts: MiddlewareOptions = {}): CheckRequest | BadCheckRequest {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const check: CheckRequest = { method: req.method ?? 'GET', path, headers: req.headers };
  if (q >= 0) {
    const query: Record<string, string> = {};
    for (const [k, v] of new URLSearchParams(url.slice(q + 1))) if (!(k in query)) query[k] = v;
    check.query = query;
  }
  // Node lower-cases incoming header names; so must the lookup, however the option was written.
  const id = req.headers[opts.requestIdHeader?.toLowerCase() ?? 'x-request-id'];
  if (typeof id === 'string' && id !== '') check.requestId = id;
  if (opts.checkHeaders) {
    const api = req.headers[API_HEADER];
    // Percent-encoded when the name is not ASCII ("Bot Export – Status"): HTTP header values are bytes.
    if (typeof api === 'string' && api !== '') check.api = api.includes('%') ? safeDecode(api) : api;
    const subjects = req.headers[SUBJECTS_HEADER];
    if (typeof subjects === 'string' && subjects !== '') {
      const given: Record<string, string> = {};
      for (const [name, value] of new URLSearchParams(subjects)) {
        if (isReservedKey(name)) return { bad: `${SUBJECTS_HEADER}: "${name}" is a reserved name, never a subject` };
        if (!Object.hasOwn(given, name)) given[name] = value;
      }
      check.subjects = given;
    }
  }
  const extra = opts.subjects?.(req);
  if (extra) check.subjects = { ...check.subjects, ...extra };
  return check;
}

/** Answers a request the check could not be asked about: 400 with the reason as a JSON error. */
export function answerBadRequest(res: ServerResponse, bad: BadCheckRequest): void {
  const body = JSON.stringify({ error: { code: 'BAD_REQUEST', message: bad.bad } });
  res.statusCode = 400;
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

/** The options with the request id header defaulting to the gateway's policy. */
export function withPolicyDefaults(gateway: Gateway, opts: MiddlewareOptions): MiddlewareOptions {
  return opts.requestIdHeader === undefined ? { ...opts, requestIdHeader: gateway.policy.requestId.header } : opts;
}

/** Sets the result's headers; on a refusal also writes the status and body and ends the response. */
export function applyResult(res: ServerResponse, result: CheckResult): void {
  for (const [name, value] of Object.entries(result.headers)) res.setHeader(name, value);
  if (result.allowed) return;
  const body = result.body ?? '';
  res.statusCode = result.status;
  res.setHeader('Content-Type', result.contentType ?? 'text/plain; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

export type Middleware = (req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void) => boolean;

/**
 * The middleware. Returns true when the request may proceed (headers set, `next` called), false when
 * it was refused and answered.
 */
export function quotaflowMiddleware(gateway: Gateway, options: MiddlewareOptions = {}): Middleware {
  const opts = withPolicyDefaults(gateway, options);
  return (req, res, next) => {
    const check = checkRequestOf(req, opts);
    if (isBadCheckRequest(check)) {
      answerBadRequest(res, check);
      return false;
    }
    const result = gateway.check(check);
    opts.onResult?.(result, req);
    applyResult(res, result);
    if (result.allowed) next?.();
    return result.allowed;
  };
}

/** The parts of a Fastify request and reply the hook uses, typed structurally: quotaflow does not depend on Fastify. */
export interface FastifyLikeRequest {
  readonly raw: IncomingMessage;
}
export interface FastifyLikeReply {
  readonly raw: ServerResponse;
  hijack(): unknown;
}

/**
 * The same middleware as a Fastify `onRequest` hook (callback style, no plugin needed):
 * `app.addHook('onRequest', fastifyOnRequest(gateway))`. Admitted: the headers are set on the raw
 * response (Fastify's writeHead keeps them) and the hook chain continues. Refused: the answer is
 * written to the raw response and the reply hijacked, so Fastify runs no handler and sends nothing.
 */
export function fastifyOnRequest(
  gateway: Gateway,
  opts: MiddlewareOptions = {},
): (request: FastifyLikeRequest, reply: FastifyLikeReply, done: () => void) => void {
  const middleware = quotaflowMiddleware(gateway, opts);
  return (request, reply, done) => {
    if (!middleware(request.raw, reply.raw, () => done())) reply.hijack();
  };
}
