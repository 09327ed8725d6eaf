/**
 * Shared by the gateway's end-to-end tests: scaled-down copies of the shipped policies, sidecars
 * (a real Gateway behind a real HTTP server) and an in-process aggregator on an `aggregatorEnv`'s
 * private topics, and a small keep-alive HTTP client that talks to a sidecar the way a real one would.
 *
 *   const env = await aggregatorEnv(t, 3);
 *   const { policy } = await policyFromText(scalePolicy(await readFile(file, 'utf8'), { windows: { '60s': '3s' }, limit: () => 5 }));
 *   await startTestAggregator(env, policy);
 *   const a = await startSidecarGateway(env, policy, { gatewayId: 'gw-a' });
 *   const reply = await a.send({ path: '/x', headers: { 'x-api-key': 'k1' } });
 *
 * Everything started here is stopped by `env.defer` (last started, first stopped), before the
 * env's topics are deleted.
 */
import { Agent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { parse, stringify } from 'yaml';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { Gateway, type CheckResult, type GatewayOptions } from '../../src/gateway/gateway.ts';
import { startSidecar, type Sidecar } from '../../src/gateway/sidecar.ts';
import type { CachedBlock } from '../../src/gateway/decision-cache.ts';
import { logger } from '../../src/log.ts';
import { tryParseDuration, type CompiledPolicy } from '../../src/policy/index.ts';
import { openUsageStore } from '../../src/store/index.ts';
import type { AggregatorTestEnv } from './aggregator.ts';
import { waitFor } from './wait.ts';
import { services } from './integration.ts';

// ---------------------------------------------------------------------------------------------
// Scaled policies

export interface ScaleOptions {
  /** Each window of the file → its scaled length, e.g. `{ '60s': '3s', '1h': '12s' }`. A window not listed is an error. */
  windows: Readonly<Record<string, string>>;
  /** The scaled limit for a limit of the file (its value and window as written). */
  limit: (limit: number, window: string) => number;
  /** Version of the scaled policy; default `<version>-scaled`. */
  version?: string;
}

/**
 * A scaled-down copy of a policy file (YAML or JSON text), as YAML text: every limit of every rule
 * and override gets its scaled window and limit (kind and any explicit resolution kept, so fixed
 * windows stay fixed), and the refusal's per-window `messages` and `x_ratelimit_window` are remapped
 * to the scaled windows, so each window keeps its own message. Pick scaled lengths that divide by 60
 * ms (the default resolution is window/60, e.g. 3s → 50 ms buckets) and keep one scaled length per
 * original one, or two windows would share a message key.
 */
export function scalePolicy(text: string, opts: ScaleOptions): string {
  const doc = parse(text) as Record<string, unknown> & {
    version: string;
    rules: Array<{ limits: Array<Record<string, unknown>> }>;
    overrides?: Array<{ limits?: Array<Record<string, unknown>> }>;
    refusal: { messages?: Record<string, string>; x_ratelimit_window?: string };
  };
  const byMs = new Map<number, string>();
  for (const [from, to] of Object.entries(opts.windows)) byMs.set(tryParseDuration(from) ?? NaN, to);
  const window = (w: string): string => {
    const to = byMs.get(tryParseDuration(w) ?? NaN);
    if (to === undefined) throw new Error(`scalePolicy: no scaled length for window ${w} (windows: ${JSON.stringify(opts.windows)})`);
    return to;
  };
  const scaleLimits = (limits: Array<Record<string, unknown>> | undefined) => {
    for (const l of limits ?? []) {
      const w = String(l.window);
      if (l.resolution !== undefined) throw new Error(`scalePolicy: limit ${l.limit}/${w} sets a resolution; scale it by hand`);
      l.limit = opts.limit(Number(l.limit), w);
      l.window = window(w);
    }
  };
  for (const rule of doc.rules) scaleLimits(rule.limits);
  for (const o of doc.overrides ?? []) scaleLimits(o.limits);
  if (doc.refusal.messages) {
    doc.refusal.messages = Object.fromEntries(Object.entries(doc.refusal.messages).map(([w, text]) => [window(w), text]));
  }
  if (doc.refusal.x_ratelimit_window !== undefined) doc.refusal.x_ratelimit_window = window(doc.refusal.x_ratelimit_window);
  delete doc.$schema; // a relative path that means nothing next to a temporary file
  doc.version = opts.version ?? `${doc.version}-scaled`;
  return stringify(doc, { lineWidth: 0 });
}

// ---------------------------------------------------------------------------------------------
// The aggregator and sidecars

/** An in-process aggregator on the env's topics and key prefix, stopped (with its store) by env.defer. */
export async function startTestAggregator(env: AggregatorTestEnv, policy: CompiledPolicy, redisUrl = services().redisUrl): Promise<Aggregator> {
  const store = await openUsageStore(redisUrl, { keyPrefix: env.keyPrefix });
  const aggregator = new Aggregator({
    kafka: env.kafka,
    store,
    policy,
    topics: env.topics,
    groupId: env.groupId,
    region: 'test',
    sessionTimeoutMs: 10_000,
    tickMs: 50,
    retryMinMs: 50,
    retryMaxMs: 500,
  });
  env.defer(async () => {
    await aggregator.stop();
    await store.close();
  });
  await aggregator.start();
  return aggregator;
}

export interface HttpReply {
  status: number;
  /** Lower-case names, as node:http presents them. */
  headers: IncomingHttpHeaders;
  body: string;
  /** What the gateway's check() returned for this very request (the reason and counter key a reply does not show). */
  check: CheckResult | undefined;
}

export interface ClientRequest {
  method?: string;
  path: string;
  headers?: Record<string, string>;
}

export interface SidecarGateway {
  gateway: Gateway;
  sidecar: Sidecar;
  url: string;
  /** Every check result, in order, whoever sent the request. */
  results: CheckResult[];
  /** One request over this sidecar's keep-alive connection. */
  send(request: ClientRequest): Promise<HttpReply>;
}

export interface SidecarGatewayOptions extends Partial<Omit<GatewayOptions, 'policy' | 'kafka' | 'topicPrefix'>> {
  gatewayId: string;
  /** Wait until the decision cache is warm before returning (default true). */
  warm?: boolean;
}

/**
 * A Gateway on the env's topics behind a sidecar without upstream, listening on a free port of
 * 127.0.0.1 (so it answers admitted requests itself, and reads X-Quotaflow-Api / -Subjects). Warm
 * when it returns; the sidecar, its client connection and the gateway are closed by env.defer.
 */
export async function startSidecarGateway(env: AggregatorTestEnv, policy: CompiledPolicy, opts: SidecarGatewayOptions): Promise<SidecarGateway> {
  const { warm = true, ...gatewayOpts } = opts;
  const log = logger(`gateway:${opts.gatewayId}`);
  const gateway = new Gateway({ region: 'test', log, ...gatewayOpts, policy, kafka: env.gatewayKafka, topicPrefix: env.topicPrefix });
  env.defer(() => gateway.stop());
  gateway.start();
  const results: CheckResult[] = [];
  // Each request sent by `send` carries a sequence number, so its reply comes with its own result.
  const bySeq = new Map<string, CheckResult>();
  const onResult = (r: CheckResult, req: IncomingMessage) => {
    results.push(r);
    const seq = req.headers[SEQ_HEADER];
    if (typeof seq === 'string') bySeq.set(seq, r);
  };
  const sidecar = await startSidecar({ gateway, host: '127.0.0.1', port: 0, log, onResult });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  env.defer(async () => {
    agent.destroy();
    await sidecar.close();
  });
  if (warm) await gateway.whenWarm(30_000);
  let seq = 0;
  const sendOne = async (r: ClientRequest): Promise<HttpReply> => {
    const id = String(++seq);
    const reply = await send(agent, sidecar.url, { ...r, headers: { ...r.headers, [SEQ_HEADER]: id } });
    reply.check = bySeq.get(id);
    bySeq.delete(id);
    return reply;
  };
  return { gateway, sidecar, url: sidecar.url, results, send: sendOne };
}

const SEQ_HEADER = 'x-e2e-seq';

function send(agent: Agent, base: string, r: ClientRequest): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(base + r.path, { method: r.method ?? 'GET', headers: r.headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), check: undefined }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * Resolves with the live block `gateway` holds on `counterKey` (for the window `windowMs`, if given)
 * once the decision has reached it through quota.decisions; rejects after `timeoutMs`. Polls the
 * decision cache rather than sending requests, which an unblocked gateway would admit and count.
 */
export async function waitForBlock(gateway: Gateway, counterKey: string, opts: { windowMs?: number; timeoutMs?: number } = {}): Promise<CachedBlock> {
  const what = `gateway ${gateway.id} to hold a block on ${counterKey}${opts.windowMs ? ` (${opts.windowMs} ms window)` : ''}`;
  // live(), not get(): what the cache holds, whatever check() makes of it.
  return waitFor(
    what,
    () => gateway.cache.live(Date.now()).find((x) => x.counterKey === counterKey && (opts.windowMs === undefined || x.windowMs === opts.windowMs)),
    { timeoutMs: opts.timeoutMs ?? 15_000, everyMs: 10 },
  );
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

/** Waits until the wall clock reaches `at` (epoch ms). */
export const sleepUntil = (at: number) => sleep(at - Date.now());

/**
 * Sends `request` until `accept(reply)` holds, or rejects after `timeoutMs`; returns every reply
 * (the last one accepted). For waiting out a refusal: refused requests consume no quota.
 */
export async function sendUntil(
  client: Pick<SidecarGateway, 'send'>,
  request: () => ClientRequest,
  accept: (reply: HttpReply) => boolean,
  timeoutMs: number,
  what: string,
  everyMs = 25,
): Promise<HttpReply[]> {
  const deadline = Date.now() + timeoutMs;
  const replies: HttpReply[] = [];
  for (;;) {
    const reply = await client.send(request());
    replies.push(reply);
    if (accept(reply)) return replies;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last reply ${reply.status} ${reply.body.slice(0, 200)}`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Rate-limit header fields

export interface IetfLimit {
  name: string;
  /** Remaining (RateLimit) or quota (RateLimit-Policy). */
  r?: number;
  t?: number;
  q?: number;
  w?: number;
}

/** Parses `"minute";r=0;t=18, "hour";r=958;t=2400` (or a RateLimit-Policy) into its items. */
export function parseIetf(value: string | string[] | undefined): IetfLimit[] {
  if (typeof value !== 'string') throw new Error(`expected one header value, got ${JSON.stringify(value)}`);
  return value.split(/,\s*/).map((item) => {
    const [name, ...params] = item.split(';');
    const m = /^"((?:[^"\\]|\\.)*)"$/.exec(name!.trim());
    if (!m) throw new Error(`not an sf-string item: ${item}`);
    const out: IetfLimit = { name: m[1]!.replace(/\\(.)/g, '$1') };
    for (const p of params) {
      const [k, v] = p.split('=');
      if (k === 'r' || k === 't' || k === 'q' || k === 'w') out[k] = Number(v);
    }
    return out;
  });
}

/** The rate-limit headers of a reply (Retry-After, X-RateLimit-*, RateLimit, RateLimit-Policy), lower-case. */
export function rateLimitHeaders(reply: HttpReply): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(reply.headers)) {
    if (typeof v === 'string' && (k === 'retry-after' || k.startsWith('x-ratelimit-') || k === 'ratelimit' || k === 'ratelimit-policy')) out[k] = v;
  }
  return out;
}
