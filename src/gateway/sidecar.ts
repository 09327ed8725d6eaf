/**
 * The sidecar (`quotaflow gateway`): an HTTP server that enforces a policy for gateways in any
 * language. With an upstream it is a reverse proxy: refused requests are answered here, admitted
 * ones are forwarded with their body, and the upstream's answer comes back with the rate-limit
 * headers added. Without one it answers admitted requests itself with 200 and a small JSON body, so
 * another proxy can ask it (nginx auth_request, Envoy ext_authz over HTTP...) and act on the status.
 *
 * Without an upstream it also reads `X-Quotaflow-Api` and `X-Quotaflow-Subjects` (see http.ts), so a
 * caller can name the API and subjects of policies whose APIs have no routes (the Kore.ai ones).
 *
 * `/_quotaflow/health` reports readiness (warm cache, buffered events) and is never rate limited.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { QuotaflowError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Gateway } from './gateway.ts';
import {
  API_HEADER,
  SUBJECTS_HEADER,
  answerBadRequest,
  applyResult,
  checkRequestOf,
  isBadCheckRequest,
  withPolicyDefaults,
  type MiddlewareOptions,
} from './http.ts';

export interface SidecarOptions extends MiddlewareOptions {
  gateway: Gateway;
  host: string;
  port: number;
  /** Forward admitted requests here (http:// or https://); absent: answer them with 200. */
  upstream?: string;
  log: Logger;
}

export interface Sidecar {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded. */
const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  API_HEADER,
  SUBJECTS_HEADER,
]);

function json(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

function forward(req: IncomingMessage, res: ServerResponse, upstream: URL, log: Logger, requestId: { header: string; value: string } | undefined): void {
  const headers: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP.has(k)) headers[k] = v;
  // A minted request id goes upstream too, so its logs name the request the client was told about.
  if (requestId !== undefined && headers[requestId.header] === undefined) headers[requestId.header] = requestId.value;
  headers.host = upstream.host;
  const base = upstream.pathname.replace(/\/$/, '');
  const send = upstream.protocol === 'https:' ? httpsRequest : httpRequest;
  const out = send(
    { protocol: upstream.protocol, hostname: upstream.hostname, port: upstream.port, method: req.method, path: base + (req.url ?? '/'), headers },
    (up) => {
      res.statusCode = up.statusCode ?? 502;
      for (const [k, v] of Object.entries(up.headers)) {
        // The rate-limit headers set by the check win over any the upstream sends.
        if (v !== undefined && !HOP.has(k) && !res.hasHeader(k)) res.setHeader(k, v);
      }
      up.pipe(res);
    },
  );
  out.on('error', (e) => {
    log.warn('the upstream did not answer', { upstream: upstream.origin, error: e });
    if (!res.headersSent) json(res, 502, { error: { code: 'UPSTREAM_UNREACHABLE', message: `the upstream ${upstream.origin} did not answer: ${e.message}` } });
    else res.destroy(e);
  });
  req.pipe(out);
}

export async function startSidecar(opts: SidecarOptions): Promise<Sidecar> {
  const { gateway, log } = opts;
  const upstream = opts.upstream === undefined ? undefined : new URL(opts.upstream);
  // Asked by another gateway (no upstream): it names the API and subjects. In front of an upstream the
  // client could set them, so only when told to.
  const checkOpts: MiddlewareOptions = withPolicyDefaults(gateway, { ...opts, checkHeaders: opts.checkHeaders ?? upstream === undefined });
  const idHeader = checkOpts.requestIdHeader!.toLowerCase();
  const server = createServer((req, res) => {
    if (req.url === '/_quotaflow/health') {
      json(res, gateway.warm ? 200 : 503, {
        gateway: gateway.id,
        region: gateway.region,
        warm: gateway.warm,
        cachedBlocks: gateway.cache.size,
        bufferedEvents: gateway.emitter?.buffered ?? 0,
        dropped: gateway.emitter?.stats.dropped ?? 0,
        stats: gateway.stats,
      });
      return;
    }
    const check = checkRequestOf(req, checkOpts);
    if (isBadCheckRequest(check)) {
      req.resume();
      answerBadRequest(res, check);
      return;
    }
    const result = gateway.check(check);
    opts.onResult?.(result, req);
    applyResult(res, result);
    if (!result.allowed) {
      req.resume();
      return;
    }
    if (upstream) {
      forward(req, res, upstream, log, result.requestId === undefined ? undefined : { header: idHeader, value: result.requestId });
    } else {
      req.resume();
      json(res, 200, {
        allowed: true,
        reason: result.reason,
        api: result.api ?? null,
        rule: result.rule ?? null,
        ...(result.detail ? { detail: result.detail } : {}),
      });
    }
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      reject(
        e.code === 'EADDRINUSE'
          ? new QuotaflowError('PORT_IN_USE', `${opts.host}:${opts.port} is already in use`, { hint: 'pick another --listen port, or stop what is using it' })
          : e,
      );
    });
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    server,
    url: `http://${host}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
