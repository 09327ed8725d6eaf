/**
 * The main job a newcomer runs first (`npm start`): quotaflow end to end on live HTTP traffic.
 *
 * It brings up Kafka and Redis (src/stack: KAFKA_BROKERS / REDIS_URL, else testcontainers, else a
 * local stack stopped afterwards), creates the topics, and runs in this process an aggregator, a
 * sidecar gateway enforcing a seed policy (TalkPilot's: 60/min and 1000/h per API key) in front of a
 * stand-in API, and HTTP clients: several API keys below their limits and one script far over its
 * per-minute limit. A live view (redrawn each second on a terminal, a snapshot line every 5 s
 * elsewhere) shows events/s, consumer lag, admitted and refused requests, live blocks, refusals by
 * rule and overshoot. On Ctrl-C or after --duration it stops the traffic, waits for the aggregator
 * to count the last events, prints a summary per API key (`--json`: as data), and stops everything.
 */
import { randomBytes } from 'node:crypto';
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { relative } from 'node:path';
import { parseArgs } from 'node:util';
import type { Admin } from 'kafkajs';
import { EXIT, untilAborted, wantsHelp, type Command, type CommandIO } from './command.ts';
import { humanDuration } from './time.ts';
import { clip, count, liveView, table } from './ui.ts';
import { resolveStack, type Stack } from '../stack/index.ts';
import { PROJECT_ROOT } from '../stack/paths.ts';
import { createKafka } from '../kafka/client.ts';
import { ensureTopics, topicNames, topicSpecs, type TopicNames } from '../kafka/topics.ts';
import { compilePolicy, loadPolicyFile, parseDuration, resolve, type CompiledLimit, type CompiledPolicy, type Resolved } from '../policy/index.ts';
import { Aggregator } from '../aggregator/aggregator.ts';
import { openUsageStore } from '../store/index.ts';
import { Gateway, type CheckResult } from '../gateway/gateway.ts';
import { startSidecar } from '../gateway/sidecar.ts';
import { SUBJECTS_HEADER } from '../gateway/http.ts';
import type { BreachRecord, Decision } from '../events/index.ts';
import { configureLogging, logger, type Level } from '../log.ts';
import { QuotaflowError } from '../errors.ts';

const SEED_POLICY = 'ops/policies/talkpilot.yaml';

const HELP = `Usage: quotaflow demo [--duration D] [--policy FILE] [--json] [options]

Runs quotaflow end to end on live HTTP traffic, on real services: Kafka and Redis from KAFKA_BROKERS /
REDIS_URL, or testcontainers, or a local stack started for the run (and stopped after it). In this
process it starts an aggregator, a sidecar gateway enforcing the policy in front of a stand-in API,
and clients: a bulk key (the policy's unlimited one), keys at 90%, 60% and 30% of their limits, one
with custom limits, and "runaway", a script far over its per-minute limit that gets blocked within
seconds, unblocked when the window has room and blocked again.

A live view shows usage events/s the aggregator consumes, its consumer lag, requests/s admitted and
refused, live blocks (key, rule, window, until), refusals by rule and overshoot; on a terminal it is
redrawn each second (logs below warn are held back meanwhile), elsewhere a snapshot line is printed
every 5 s. Ctrl-C (or --duration) stops the traffic, waits for the aggregator to count the last
events and prints a summary per API key: sent, admitted, refused, the limit it hit; then stops
everything the demo started. A second Ctrl-C quits at once (services started here go with it).

Options:
  --duration D        stop after D of traffic: 60s, 5m, or seconds (default: run until Ctrl-C)
  --policy FILE       the policy to enforce (default ${SEED_POLICY}); the traffic's plain paths
                      (GET /calls...) must resolve under it: a default rule (bolna.yaml works too)
  --json              print the summary as JSON on stdout (the live view and progress go to stderr)
  --topic-prefix P    prefix of quotaflow's topic names (default: none, the standard names, so
                      \`quotaflow audit\` and \`quotaflow limits\` work alongside); the aggregator's
                      consumer group is <P>quotaflow-demo
  --key-prefix P      prefix of quotaflow's Redis keys (default: qf:)
  --keep              after a --duration run, keep the stack up until Ctrl-C and print its addresses

Examples:
  npm start                                  # the same as: quotaflow demo
  quotaflow demo --duration 90s
  quotaflow demo --duration 60 --json | jq '.tenants[] | {key, sent, refused, limitsHit}'
  quotaflow demo --policy ops/policies/bolna.yaml --duration 2m
  # against a stack kept up by \`quotaflow stack up\` (with its exports), from another terminal while the demo runs:
  quotaflow limits set --key rule=per-key:api_key=runaway --limit 720 --window 60s   # lifts runaway's block at once
  quotaflow audit --tenant api_key=runaway                                          # its breaches: refused, overshoot
`;

// ─── Options ────────────────────────────────────────────────────────────────────────────────────

interface DemoOptions {
  durationMs: number | undefined;
  policyFile: string;
  topicPrefix: string;
  keyPrefix: string;
  json: boolean;
  keep: boolean;
}

const usageError = (message: string, hint: string) => new QuotaflowError('USAGE', message, { hint });

function parseOptions(argv: string[]): DemoOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        duration: { type: 'string' }, policy: { type: 'string' }, json: { type: 'boolean' }, keep: { type: 'boolean' },
        'topic-prefix': { type: 'string' }, 'key-prefix': { type: 'string' },
      },
    }));
  } catch (e) {
    throw usageError(e instanceof Error ? e.message : String(e), 'run `quotaflow demo --help` for the options');
  }
  const topicPrefix = (values['topic-prefix'] as string | undefined) ?? '';
  if (!/^[A-Za-z0-9._-]*$/.test(topicPrefix)) {
    throw usageError(`--topic-prefix ${JSON.stringify(topicPrefix)} has characters Kafka refuses in topic names`, 'use letters, digits, ".", "_" and "-", e.g. `--topic-prefix demo-1.`');
  }
  const keyPrefix = (values['key-prefix'] as string | undefined) ?? 'qf:';
  if (keyPrefix === '' || /[{}\s]/.test(keyPrefix)) {
    throw usageError(`--key-prefix ${JSON.stringify(keyPrefix)} is empty or has braces or spaces`, 'e.g. `--key-prefix demo:` (braces would break the Redis Cluster hash tags)');
  }
  const durationMs = parseDurationOption(values.duration as string | undefined);
  if (values.keep && durationMs === undefined) {
    throw usageError('--keep only makes sense with --duration', 'e.g. `quotaflow demo --duration 60s --keep`: the stack stays up after the summary until Ctrl-C');
  }
  return {
    durationMs, topicPrefix, keyPrefix,
    policyFile: (values.policy as string | undefined) ?? `${PROJECT_ROOT}/${SEED_POLICY}`,
    json: values.json === true, keep: values.keep === true,
  };
}

/** `60s`, `5m`, `1h`, or a number of seconds; at least a second. */
function parseDurationOption(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) * 1_000 : parseDuration(text.trim());
  if (ms === undefined || !(ms >= 1_000)) {
    throw usageError(`--duration ${JSON.stringify(text)} is not a duration of a second or more`, 'e.g. `--duration 60s`, `--duration 5m`, or `--duration 90` (seconds)');
  }
  return ms;
}

// ─── The traffic plan: who sends what, at which rate ────────────────────────────────────────────

interface PlannedRequest { method: string; path: string }

/** A typical TalkPilot integration: list agents, poll an agent's status, page through calls, replace forwarding slots. */
const INTEGRATION: PlannedRequest[] = [
  { method: 'GET', path: '/agents?limit=100' },
  { method: 'GET', path: '/agents/ag_1042/status' },
  { method: 'GET', path: '/calls?limit=100' },
  { method: 'PUT', path: '/forwarding-slots' },
];
const MONITORING: PlannedRequest[] = [{ method: 'GET', path: '/agents/ag_1042/status' }];
const RUNAWAY: PlannedRequest[] = [{ method: 'GET', path: '/calls?limit=100' }];

/** Requests per second of the policy's unlimited key (most of the load, none of the refusals); no other key under its limits sends more. */
const BULK_RATE = 30;
/** The over-limit key fills its shortest window in this long, so it is blocked within seconds of start. */
const FILL_SHORTEST_MS = 6_000;

type Persona =
  | { key: string; kind: 'steady'; share: number; role: string }
  | { key: string; kind: 'bulk'; role: string }
  | { key: string; kind: 'over'; role: string };

interface TenantPlan {
  /** The subject value sent (an API key for TalkPilot). */
  key: string;
  /** As on usage events, decisions and breach records: `api_key=acme`. */
  tenantKey: string;
  /** The key `quotaflow limits set` takes for this tenant's counter. */
  scopeKey: string;
  role: string;
  overLimit: boolean;
  ratePerSec: number;
  /** "60/60s, 1000/1h" or "unlimited". */
  limits: string;
  requests: PlannedRequest[];
}

/** How a tenant's subject travels: in the policy's own header, else in the sidecar's X-Quotaflow-Subjects. */
interface Identity {
  subject: string;
  viaSubjectsHeader: boolean;
  headers(key: string): Record<string, string>;
}

function identityOf(policy: CompiledPolicy): Identity {
  const subject = policy.tenant[0]!;
  const header = policy.subjects.get(subject)?.header;
  if (header) return { subject, viaSubjectsHeader: false, headers: (key) => ({ [header]: key }) };
  return { subject, viaSubjectsHeader: true, headers: (key) => ({ [SUBJECTS_HEADER]: `${encodeURIComponent(subject)}=${encodeURIComponent(key)}` }) };
}

/** The policy file's own example keys on its default rule: one with custom limits, one unlimited. */
function policyKeys(policy: CompiledPolicy, subject: string): { custom?: string; unlimited?: string } {
  const out: { custom?: string; unlimited?: string } = {};
  for (const o of policy.policy.overrides) {
    const key = o.subjects[subject];
    if (o.rule !== policy.defaultRule?.id || key === undefined) continue;
    if (o.unlimited) out.unlimited ??= key;
    else out.custom ??= key;
  }
  return out;
}

function personas(policy: CompiledPolicy, subject: string): Persona[] {
  const { custom, unlimited } = policyKeys(policy, subject);
  return [
    ...(unlimited ? [{ key: unlimited, kind: 'bulk', role: 'bulk, unlimited key' } as const] : []),
    ...(custom ? [{ key: custom, kind: 'steady', share: 0.6, role: 'custom limits, 60% of them' } as const] : []),
    { key: 'acme', kind: 'steady', share: 0.9, role: 'CRM sync, 90% of limits' },
    { key: 'globex', kind: 'steady', share: 0.6, role: 'dialer, 60% of limits' },
    { key: 'initech', kind: 'steady', share: 0.3, role: 'reporting, 30% of limits' },
    { key: 'runaway', kind: 'over', role: 'loop ignoring Retry-After' },
  ];
}

const limitsText = (limits: readonly CompiledLimit[]) => limits.map((l) => `${l.limit}/${l.window}`).join(', ');
/** The steady rate (requests/s) that stays under every limit. */
const sustainable = (limits: readonly CompiledLimit[]) => Math.min(...limits.map((l) => l.limit / (l.windowMs / 1_000)));

/** How the sidecar will resolve this key's requests; refuses a policy the demo's traffic cannot exercise. */
function resolveAll(policy: CompiledPolicy, identity: Identity, key: string, requests: PlannedRequest[]): Resolved[] {
  return requests.map(({ method, path }) => {
    const r = resolve(policy, {
      method, path: path.split('?')[0], headers: lowerCase(identity.headers(key)),
      subjects: identity.viaSubjectsHeader ? { [identity.subject]: key } : undefined,
    });
    if (r.kind === 'unresolved') {
      throw usageError(`the demo's traffic does not resolve under ${policy.product}'s policy (${method} ${path}: ${r.reason})`,
        `the demo sends plain paths with the tenant in a header; use a policy with a default rule, e.g. ${SEED_POLICY} or ops/policies/bolna.yaml`);
    }
    return r;
  });
}

function planTenant(policy: CompiledPolicy, identity: Identity, p: Persona): TenantPlan {
  const requests = p.kind === 'bulk' ? MONITORING : p.kind === 'over' ? RUNAWAY : INTEGRATION;
  const resolved = resolveAll(policy, identity, p.key, requests);
  const first = resolved[0]!;
  const limited = resolved.filter((r) => !r.unlimited);
  const room = limited.length ? Math.min(...limited.map((r) => sustainable(r.limits))) : Infinity;
  let ratePerSec: number;
  if (p.kind === 'over') {
    const shortest = [...first.limits].sort((a, b) => a.windowMs - b.windowMs)[0];
    if (first.unlimited || !shortest) throw usageError(`the key "${p.key}" is unlimited under this policy, so nothing can go over a limit`, 'use a policy whose default rule limits every key');
    ratePerSec = Math.min(200, Math.max(shortest.limit / (FILL_SHORTEST_MS / 1_000), 2 * shortest.limit / (shortest.windowMs / 1_000)));
  } else {
    ratePerSec = Math.min(BULK_RATE, p.kind === 'steady' ? p.share * room : room * 0.9);
  }
  return {
    key: p.key, tenantKey: first.tenantKey, scopeKey: first.scopeKey, role: p.role, overLimit: p.kind === 'over',
    ratePerSec, limits: first.unlimited ? 'unlimited' : limitsText(first.limits), requests,
  };
}

function planTraffic(policy: CompiledPolicy, identity: Identity): TenantPlan[] {
  return personas(policy, identity.subject).map((p) => planTenant(policy, identity, p));
}

function lowerCase(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}

// ─── The stand-in API and the clients ───────────────────────────────────────────────────────────

interface Closable { url: string; close(): Promise<void> }

/** "The API" behind the sidecar: answers every request with 200 and a small JSON body. */
async function startUpstream(): Promise<Closable> {
  let served = 0;
  const server = createServer((req, res) => {
    req.resume();
    const body = JSON.stringify({ data: { method: req.method, path: req.url }, request_id: `req_${(++served).toString(36)}` });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    }),
  };
}

interface TenantCounts { sent: number; admitted: number; refused: number; failed: number }

const zero = (): TenantCounts => ({ sent: 0, admitted: 0, refused: 0, failed: 0 });

/**
 * HTTP clients, one schedule per tenant, over keep-alive connections to the sidecar. Requests are
 * evenly paced (no bursts, even after a stall), so a key planned under its limits stays under them
 * in every window, fixed or rolling.
 */
class Traffic {
  readonly counts = new Map<string, TenantCounts>();
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64 });
  private readonly inFlight = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly plan: TenantPlan[], private readonly target: URL, private readonly identity: Identity, private readonly refusalStatus: number) {
    for (const t of plan) this.counts.set(t.key, zero());
  }

  start(): void {
    const t0 = Date.now();
    const schedule = this.plan.map((t, i) => ({ t, n: 0, next: t.overLimit ? t0 : t0 + ((i + 1) / (this.plan.length + 1)) * (1_000 / t.ratePerSec) }));
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const s of schedule) {
        if (now - s.next > 1_000) s.next = now; // after a stall, carry on rather than catch up in a burst
        for (; s.next <= now; s.next += 1_000 / s.t.ratePerSec) this.fire(s.t, s.n++);
      }
    }, 20);
  }

  /** Stops sending and waits for the answers to the requests in flight. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all(this.inFlight);
    this.agent.destroy();
  }

  totals(): TenantCounts {
    const total = zero();
    for (const c of this.counts.values()) for (const k of Object.keys(total) as Array<keyof TenantCounts>) total[k] += c[k];
    return total;
  }

  private fire(t: TenantPlan, n: number): void {
    const c = this.counts.get(t.key)!;
    c.sent++;
    const { method, path } = t.requests[n % t.requests.length]!;
    const headers = { ...this.identity.headers(t.key), 'X-Request-Id': `req_${t.key}_${n}` };
    const done = this.send(method, path, headers).then((status) => {
      if (status === this.refusalStatus) c.refused++;
      else if (status >= 200 && status < 300) c.admitted++;
      else c.failed++;
    });
    this.inFlight.add(done);
    void done.finally(() => this.inFlight.delete(done));
  }

  /** The response status, or 0 when there was none. */
  private send(method: string, path: string, headers: Record<string, string>): Promise<number> {
    return new Promise((resolve) => {
      const body = method === 'PUT' ? JSON.stringify({ slots: [{ number: '+14155550100', agent_id: 'ag_1042' }] }) : undefined;
      const req = httpRequest({
        agent: this.agent, host: this.target.hostname, port: this.target.port, method, path, timeout: 10_000,
        headers: body ? { ...headers, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } : headers,
      }, (res) => {
        res.once('end', () => resolve(res.statusCode ?? 0));
        res.once('error', () => resolve(0));
        res.resume();
      });
      req.once('timeout', () => req.destroy(new Error('no answer within 10 s')));
      req.once('error', () => resolve(0));
      req.end(body);
    });
  }
}

// ─── What the aggregator and the sidecar report ─────────────────────────────────────────────────

const bump = <K>(m: Map<K, number>, k: K, by = 1) => m.set(k, (m.get(k) ?? 0) + by);

/** Folds the aggregator's decisions and breach records and the sidecar's refusals into what the view shows. */
class Observer {
  /** Live blocks by counter and window, as the last decision left them. */
  private readonly blocks = new Map<string, Decision>();
  private readonly breaches = new Map<string, BreachRecord>();
  /** rule → refusal reason → requests. */
  readonly refusals = new Map<string, Map<string, number>>();
  /** tenant → "60/60s" → blocks published. */
  readonly hits = new Map<string, Map<string, number>>();
  readonly published = { blocks: 0, moved: 0, unblocks: 0, near: 0 };

  onDecision = (d: Decision): void => {
    const id = `${d.counterKey}|${d.windowMs}`;
    if (d.state === 'near') {
      this.published.near++;
    } else if (d.state === 'unblock') {
      this.published.unblocks++;
      this.blocks.delete(id);
    } else {
      const live = this.blocks.get(id);
      if (live && live.until > d.decidedAt) {
        this.published.moved++;
      } else {
        this.published.blocks++;
        const m = this.hits.get(d.tenant) ?? new Map<string, number>();
        this.hits.set(d.tenant, bump(m, `${d.limit}/${d.window}`));
      }
      this.blocks.set(id, d);
    }
  };

  /** A breach is recorded when first crossed and again when lifted: the latest record of each counts. */
  onBreach = (b: BreachRecord): void => {
    this.breaches.set(`${b.counterKey}|${b.windowMs}|${b.firstCrossedAt}`, b);
  };

  onResult = (r: CheckResult): void => {
    if (r.allowed) return;
    const m = this.refusals.get(r.rule ?? '(none)') ?? new Map<string, number>();
    this.refusals.set(r.rule ?? '(none)', bump(m, r.reason));
  };

  /** Blocks whose `until` is still ahead (gateways expire them on their own at `until`). */
  liveBlocks(now: number): Decision[] {
    return [...this.blocks.values()].filter((d) => d.until > now).sort((a, b) => a.until - b.until);
  }

  get overshoot(): number {
    let sum = 0;
    for (const b of this.breaches.values()) sum += b.overshoot;
    return sum;
  }

  get breachCount(): number {
    return this.breaches.size;
  }
}

/** Messages in the usage topic not yet committed by the group: the aggregator's consumer lag. */
async function consumerLag(admin: Admin, groupId: string, topic: string): Promise<number> {
  const [ends, groups] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId, topics: [topic] })]);
  const committed = new Map((groups[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
  return ends.reduce((lag, p) => {
    const at = committed.get(p.partition) ?? -1;
    return lag + Math.max(0, Number(p.high) - (at >= 0 ? at : Number(p.low)));
  }, 0);
}

/** Polls the lag in the background, one request pair at a time; `value` is the latest answer. */
class LagGauge {
  value: number | undefined;
  private polling = false;
  constructor(private readonly admin: Admin, private readonly groupId: string, private readonly topic: string) {}
  poll(): void {
    if (this.polling) return;
    this.polling = true;
    consumerLag(this.admin, this.groupId, this.topic)
      .then((lag) => (this.value = lag), () => (this.value = undefined))
      .finally(() => (this.polling = false));
  }
}

// ─── The live view ──────────────────────────────────────────────────────────────────────────────

interface Sample { at: number; events: number; sent: number; admitted: number; refused: number }

interface LiveState {
  /** The subject tenants are keyed by (api_key). */
  subject: string;
  elapsedMs: number;
  durationMs: number | undefined;
  perSec: Omit<Sample, 'at'>;
  totals: TenantCounts;
  events: number;
  lag: number | undefined;
  cachedBlocks: number;
  blocks: Decision[];
  refusals: Map<string, Map<string, number>>;
  overshoot: number;
  breaches: number;
  tenants: Array<TenantPlan & TenantCounts>;
  warnings: string[];
}

/** Rates over the last few seconds of samples (one a second), steadier than a single second's. */
class Rates {
  private readonly samples: Sample[] = [];
  push(s: Sample): Omit<Sample, 'at'> {
    this.samples.push(s);
    if (this.samples.length > 4) this.samples.shift();
    const a = this.samples[0]!;
    const secs = (s.at - a.at) / 1_000;
    const per = (k: keyof Omit<Sample, 'at'>) => (secs > 0 ? (s[k] - a[k]) / secs : 0);
    return { events: per('events'), sent: per('sent'), admitted: per('admitted'), refused: per('refused') };
  }
}

const REASONS: Record<string, string> = {
  blocked: 'on a block decision',
  'local-limit': 'on the sidecar\'s own count',
  'near-share': 'share spent near the limit',
  'fallback-closed': 'cache not warm (closed)',
};

/** The tenant column's heading: "API key" for TalkPilot, else the subject's name. */
const tenantHeading = (subject: string) => (subject === 'api_key' ? 'API key' : subject);
const clock = (ms: number) => `${Math.floor(ms / 60_000)}:${String(Math.floor((ms % 60_000) / 1_000)).padStart(2, '0')}`;
const timeOfDay = (ms: number) => new Date(ms).toTimeString().slice(0, 8);
const perSecText = (r: number) => (r >= 1 || r === 0 ? `${r.toFixed(r < 10 ? 1 : 0)}/s` : `${(r * 60).toFixed(r * 60 < 10 ? 1 : 0)}/min`);

function refusalsText(refusals: LiveState['refusals']): string {
  if (refusals.size === 0) return 'none';
  return [...refusals].map(([rule, byReason]) => {
    const total = [...byReason.values()].reduce((a, b) => a + b, 0);
    const parts = [...byReason].map(([reason, n]) => `${count(n)} ${REASONS[reason] ?? reason}`);
    return `${rule} ${count(total)} (${parts.join(', ')})`;
  }).join('; ');
}

function blockRows(blocks: Decision[], now: number): Array<Array<string | number>> {
  return blocks.map((d) => [d.tenant, d.rule, d.window, `${d.observed}/${d.limit}`, timeOfDay(d.until), `${Math.ceil((d.until - now) / 1_000)}s`]);
}

function frame(s: LiveState, title: string): string[] {
  const now = Date.now();
  const lag = s.lag === undefined ? '?' : count(s.lag);
  const lines = [
    `${title} · ${clock(s.elapsedMs)}${s.durationMs ? ` of ${clock(s.durationMs)}` : ''} · Ctrl-C stops and prints the summary`,
    '',
    `requests   ${perSecText(s.perSec.sent)} sent · ${perSecText(s.perSec.admitted)} admitted · ${perSecText(s.perSec.refused)} refused   (so far ${count(s.totals.sent)} · ${count(s.totals.admitted)} · ${count(s.totals.refused)})`,
    `pipeline   ${perSecText(s.perSec.events)} usage events consumed · consumer lag ${lag} · ${count(s.events)} counted so far`,
    `blocks     ${s.blocks.length} live (${s.cachedBlocks} in the sidecar's cache)`,
    `overshoot  ${count(s.overshoot)} admitted over a limit (${s.breaches} breach record(s))`,
    `refusals   ${refusalsText(s.refusals)}`,
    '',
    table([tenantHeading(s.subject), 'traffic', 'limits', 'rate', 'sent', 'admitted', 'refused'],
      s.tenants.map((t) => [t.key, t.role, t.limits, perSecText(t.ratePerSec), t.sent, t.admitted, t.refused])),
    '',
    s.blocks.length
      ? table(['live block', 'rule', 'window', 'count', 'until', 'left'], blockRows(s.blocks, now))
      : 'no live block right now',
  ];
  if (s.warnings.length) lines.push('', `warnings (${s.warnings.length}, all printed to stderr at the end):`, ...s.warnings.slice(-2).map((w) => `  ${w}`));
  return lines.flatMap((l) => l.split('\n'));
}

/** One line for logs and CI: the same figures as the live view, every 5 s. */
function snapshotLine(s: LiveState): string {
  const blocks = s.blocks.map((d) => `${d.tenant} ${d.window} until ${timeOfDay(d.until)} (${Math.ceil((d.until - Date.now()) / 1_000)}s)`).join(', ') || 'none';
  return `[${clock(s.elapsedMs)}] requests ${perSecText(s.perSec.sent)} sent, ${perSecText(s.perSec.admitted)} admitted, ${perSecText(s.perSec.refused)} refused`
    + ` | events ${perSecText(s.perSec.events)} (${count(s.events)}), lag ${s.lag ?? '?'} | blocks: ${blocks}`
    + ` | refused by rule: ${[...s.refusals].map(([rule, m]) => `${rule} ${count([...m.values()].reduce((a, b) => a + b, 0))}`).join(', ') || 'none'}`
    + ` | overshoot ${s.overshoot}`;
}

// ─── The summary ────────────────────────────────────────────────────────────────────────────────

interface DemoSummary {
  policy: string;
  product: string;
  trafficMs: number;
  stoppedBy: 'duration' | 'ctrl-c' | 'error';
  topics: TopicNames;
  group: string;
  keyPrefix: string;
  /** The status a refused request gets (429 in every seed policy). */
  refusalStatus: number;
  /** The subject tenants are keyed by: api_key for TalkPilot. */
  tenantSubject: string;
  tenants: Array<{
    key: string; tenant: string; role: string; limits: string; ratePerSec: number; overLimit: boolean;
    sent: number; admitted: number; refused: number; failed: number; limitsHit: string[]; blocks: number;
  }>;
  requests: TenantCounts;
  events: {
    /** Usage events the sidecar sent to Kafka (one per admitted or refused request). */
    produced: number;
    dropped: number;
    /** Events the aggregator consumed and committed in this run, including any left from before it. */
    consumed: number;
    fromBeforeRun: number;
    /** The consumer lag when the summary was made: 0 once the aggregator has caught up (null: unknown). */
    lagAtEnd: number | null;
  };
  blocks: { published: number; moved: number; unblocks: number; nearSnapshots: number };
  refusalsByRule: Record<string, Record<string, number>>;
  overshoot: number;
  breaches: number;
}

function limitsHit(observer: Observer, tenantKey: string): { limitsHit: string[]; blocks: number } {
  const m = observer.hits.get(tenantKey) ?? new Map<string, number>();
  return { limitsHit: [...m.keys()], blocks: [...m.values()].reduce((a, b) => a + b, 0) };
}

/** The over-limit key's story in one sentence, with its own figures. */
function whatHappened(s: DemoSummary): string {
  const t = s.tenants.find((x) => x.overLimit);
  if (!t) return '';
  const others = s.tenants.filter((x) => !x.overLimit);
  const othersRefused = others.reduce((n, x) => n + x.refused, 0);
  const blocked = t.blocks
    ? `the aggregator saw it reach ${t.limitsHit.join(' and ')} and published a block to ${s.topics.decisions} with the time its window has room again (${t.blocks}×); the sidecar answered ${s.refusalStatus} with Retry-After until then, ${count(t.refused)} times`
    : 'it was not blocked during this run (too short for its window?)';
  return `What happened: "${t.key}" sent ${count(t.sent)} requests at ${t.ratePerSec}/s against ${t.limits}: ${blocked}. `
    + (othersRefused === 0 ? `The ${others.length} other keys stayed under their limits and were never refused.` : `The other keys were refused ${count(othersRefused)} times.`);
}

function summaryText(s: DemoSummary, next: string): string {
  const rows = s.tenants.map((t) => [
    t.key, t.role, t.limits, t.sent, t.admitted, t.refused,
    t.limitsHit.length ? `${t.limitsHit.join(', ')} (blocked ${t.blocks}×)` : '—',
  ]);
  const r = s.requests;
  const e = s.events;
  const exact = e.lagAtEnd === 0 && e.consumed - e.fromBeforeRun === r.admitted + r.refused;
  const refusedBy = Object.entries(s.refusalsByRule).map(([rule, m]) => `${rule}: ${Object.entries(m).map(([reason, n]) => `${count(n)} ${REASONS[reason] ?? reason}`).join(', ')}`).join('; ');
  return [
    `Summary — ${humanDuration(s.trafficMs)} of traffic through the sidecar, ${s.product} policy (${s.policy}), stopped by ${s.stoppedBy}`,
    '',
    table([tenantHeading(s.tenantSubject), 'traffic', 'limits', 'sent', 'admitted', 'refused', 'limit hit'], rows),
    '',
    whatHappened(s),
    '',
    `Requests   ${count(r.sent)} sent: ${count(r.admitted)} admitted, ${count(r.refused)} refused with ${s.refusalStatus}${r.failed ? `, ${count(r.failed)} failed` : ''}.${refusedBy ? ` Refused by rule — ${refusedBy}.` : ''}`,
    `Events     the sidecar sent ${count(e.produced)} usage events to ${s.topics.usage}${e.dropped ? ` (${count(e.dropped)} dropped)` : ''}; the aggregator consumed ${count(e.consumed - e.fromBeforeRun)}`
      + `${e.fromBeforeRun ? ` (and ${count(e.fromBeforeRun)} left from before this run)` : ''}${exact ? ' — every request counted exactly once' : `, consumer lag at the end ${e.lagAtEnd ?? 'unknown'}`}.`,
    `Blocks     ${s.blocks.published} published to ${s.topics.decisions} (${s.blocks.moved} re-published with a later until), ${s.blocks.unblocks} lifted, ${s.blocks.nearSnapshots} near-limit snapshot(s).`,
    `Overshoot  ${count(s.overshoot)} request(s) admitted over a limit, from ${s.breaches} breach record(s) in ${s.topics.audit}.`
      + (s.overshoot === 0 ? ' One gateway sees all of a key\'s traffic here, so its own count stops the key at the limit; with many gateways near-limit shares keep overshoot small.' : ''),
    '',
    next,
  ].join('\n');
}

function nextSteps(stack: Stack, opts: DemoOptions, runaway: TenantPlan): string {
  const prefix = opts.topicPrefix ? ` --topic-prefix ${opts.topicPrefix}` : '';
  const audit = `\`quotaflow audit${prefix} --tenant ${runaway.tenantKey}\``;
  const room = Math.ceil((runaway.ratePerSec * 72) / 10) * 10; // its rate a minute, and a fifth more
  const limits = ` or, while a demo runs, lift the block live: \`quotaflow limits set${prefix} --key ${runaway.scopeKey} --limit ${room} --window 60s\``;
  return stack.kafka.source === 'external'
    ? `Next: with the same KAFKA_BROKERS, see the breaches with ${audit}${limits}.`
    : `Next: keep a stack up with \`quotaflow stack up\` (it prints KAFKA_BROKERS and REDIS_URL), run the demo against it, then try ${audit}${limits}.`;
}

// ─── Running it ─────────────────────────────────────────────────────────────────────────────────

/** What the demo started, stopped last-started first. Each stop runs once, also when called early. */
class Started {
  private readonly stops: Array<() => Promise<void>> = [];
  add(stop: () => Promise<unknown>): () => Promise<void> {
    let done: Promise<void> | undefined;
    const once = () => (done ??= stop().then(() => undefined, (e) => logger('demo').warn('stopping part of the demo failed', { error: e })));
    this.stops.push(once);
    return once;
  }
  async stopAll(): Promise<void> {
    for (const stop of [...this.stops].reverse()) await stop();
  }
}

interface Pipeline {
  admin: Admin;
  topics: TopicNames;
  group: string;
  aggregator: Aggregator;
  gateway: Gateway;
  sidecarUrl: string;
  /** Stops accepting requests, then sends the events still buffered (both run once). */
  closeSidecar(): Promise<void>;
  stopGateway(): Promise<void>;
  stopAggregator(): Promise<void>;
  observer: Observer;
  /** Events in the usage topic the group had not committed when the aggregator started. */
  backlog: number;
  /** The subject tenants are keyed by. */
  subject: string;
}

async function startPipeline(stack: Stack, policy: CompiledPolicy, identity: Identity, opts: DemoOptions, started: Started, say: (t: string) => void): Promise<Pipeline> {
  const runId = randomBytes(3).toString('hex');
  const kafka = createKafka({ brokers: stack.brokers, clientId: `quotaflow-demo-${runId}` });
  const admin = kafka.admin();
  await admin.connect();
  started.add(() => admin.disconnect());
  const topics = topicNames(opts.topicPrefix);
  const created = await ensureTopics(admin, topicSpecs(topics));
  say(`  topics  ${Object.values(topics).join(', ')} — ${opts.topicPrefix ? `prefix "${opts.topicPrefix}"` : 'the standard names'}${created.length ? `, created ${created.length}` : ', already there'}`);

  const group = `${opts.topicPrefix}quotaflow-demo`;
  const backlog = await retrying(() => consumerLag(admin, group, topics.usage), 10_000);
  const store = await openUsageStore(stack.redisUrl, { keyPrefix: opts.keyPrefix });
  started.add(() => store.close());
  const observer = new Observer();
  const aggregator = new Aggregator({ kafka, store, policy, topics, groupId: group, region: 'local' });
  aggregator.on('decision', observer.onDecision).on('breach', observer.onBreach);
  const assigned = new Promise<void>((r) => aggregator.once('assigned', () => r()));
  const stopAggregator = started.add(() => aggregator.stop());
  await aggregator.start();
  say(`  aggregator  consumer group ${group} on ${topics.usage}${backlog ? ` (${count(backlog)} events from before this run to catch up on)` : ''}; Redis keys ${opts.keyPrefix}*`);

  const upstream = await startUpstream();
  started.add(() => upstream.close());
  const gateway = new Gateway({ policy, kafka, topicPrefix: opts.topicPrefix, region: 'local', gatewayId: `demo-${runId}` });
  gateway.start();
  const stopGateway = started.add(() => gateway.stop());
  const sidecar = await startSidecar({ gateway, host: '127.0.0.1', port: 0, upstream: upstream.url, log: logger('gateway'), checkHeaders: identity.viaSubjectsHeader, onResult: observer.onResult });
  const closeSidecar = started.add(() => sidecar.close());
  say(`  sidecar  ${sidecar.url} → the API (an in-process stand-in) at ${upstream.url}`);

  await Promise.all([
    gateway.whenWarm(30_000).catch(() => say('  (the sidecar\'s decision cache is not warm yet; it enforces its own counts meanwhile)')),
    withTimeout(assigned, 30_000).catch(() => say('  (the aggregator has not joined its group yet; events wait in Kafka meanwhile)')),
  ]);
  return { admin, topics, group, aggregator, gateway, sidecarUrl: sidecar.url, closeSidecar, stopGateway, stopAggregator, observer, backlog, subject: identity.subject };
}

/** A new topic's leaders may answer "not the leader" for a moment after its metadata says they exist. */
async function retrying<T>(call: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await call();
    } catch (e) {
      if (Date.now() > deadline || (e as { retriable?: unknown }).retriable === false) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

interface HeldLogs {
  /** Warnings and errors logged meanwhile, for the view and for stderr afterwards. */
  warnings: string[];
  /** Logs go to stderr again (still at warn), after the warnings held so far. */
  release(): void;
  /** The level the environment asked for, once the demo is done. */
  restore(): void;
}

/** While the live view is on a terminal, logs below warn are dropped and warnings are held, so they cannot garble it. */
function holdLogs(io: CommandIO): HeldLogs {
  const warnings: string[] = [];
  const level = (io.env.QUOTAFLOW_LOG ?? 'info') as Level | 'silent';
  const toStderr = (line: string) => process.stderr.write(line + '\n');
  configureLogging({ level: level === 'debug' || level === 'info' ? 'warn' : level, write: (line) => warnings.push(line) });
  return {
    warnings,
    release() {
      configureLogging({ write: toStderr });
      for (const w of warnings) toStderr(w);
    },
    restore: () => configureLogging({ level, write: toStderr }),
  };
}

/** Where the live view goes: stdout, unless stdout carries the JSON summary. */
const viewStream = (opts: DemoOptions) => (opts.json ? process.stderr : process.stdout);

interface RunResult { stoppedBy: DemoSummary['stoppedBy']; trafficMs: number; fatal?: unknown }

interface StopWhen {
  signal: AbortSignal;
  /** Why it stopped: Ctrl-C unless the duration ran out or the aggregator failed. */
  why: Pick<RunResult, 'stoppedBy' | 'fatal'>;
  dispose(): void;
}

/** Aborts on Ctrl-C, when --duration is up, or when the aggregator stops on an error it cannot retry. */
function stopWhen(io: CommandIO, durationMs: number | undefined, aggregator: Aggregator): StopWhen {
  const stop = new AbortController();
  const why: StopWhen['why'] = { stoppedBy: 'ctrl-c' };
  const onAbort = () => stop.abort();
  const onFatal = (e: unknown) => {
    Object.assign(why, { stoppedBy: 'error', fatal: e });
    stop.abort();
  };
  io.signal.addEventListener('abort', onAbort, { once: true });
  aggregator.once('fatal', onFatal);
  const timer = durationMs === undefined ? undefined : setTimeout(() => {
    why.stoppedBy = 'duration';
    stop.abort();
  }, durationMs);
  if (io.signal.aborted) stop.abort();
  return {
    signal: stop.signal,
    why,
    dispose() {
      clearTimeout(timer);
      io.signal.removeEventListener('abort', onAbort);
      aggregator.off('fatal', onFatal);
    },
  };
}

/** Drives the traffic and the live view until Ctrl-C, --duration or an aggregator that cannot go on; then drains. */
async function drive(p: Pipeline, plan: TenantPlan[], traffic: Traffic, lag: LagGauge, opts: DemoOptions, io: CommandIO, title: string, held: HeldLogs | undefined): Promise<RunResult> {
  const stop = stopWhen(io, opts.durationMs, p.aggregator);
  const view = viewStream(opts).isTTY ? liveView(viewStream(opts)) : undefined;
  const rates = new Rates();
  const t0 = Date.now();
  let lastLine = t0;
  const tick = () => {
    lag.poll();
    const s = liveState(p, plan, traffic, lag, rates, Date.now() - t0, opts.durationMs, held?.warnings ?? []);
    if (view) view.draw(frame(s, title));
    else if (Date.now() - lastLine >= 5_000) {
      lastLine = Date.now();
      (opts.json ? io.err : io.out)(snapshotLine(s));
    }
  };
  traffic.start();
  const ticker = setInterval(tick, 1_000);
  try {
    await untilAborted(stop.signal);
  } finally {
    clearInterval(ticker);
    stop.dispose();
    view?.clear();
  }
  const result: RunResult = { ...stop.why, trafficMs: Date.now() - t0 };
  try {
    (opts.json ? io.err : io.out)('stopping: traffic off; waiting for the last answers and for the aggregator to count the last events… (Ctrl-C again quits at once)');
    await traffic.stop();
    await drain(p, lag);
  } finally {
    held?.release();
  }
  return result;
}

function liveState(p: Pipeline, plan: TenantPlan[], traffic: Traffic, lag: LagGauge, rates: Rates, elapsedMs: number, durationMs: number | undefined, warnings: string[]): LiveState {
  const totals = traffic.totals();
  const events = p.aggregator.stats.committed;
  return {
    subject: p.subject, elapsedMs, durationMs, totals, events, lag: lag.value, warnings,
    perSec: rates.push({ at: Date.now(), events: p.aggregator.stats.events, sent: totals.sent, admitted: totals.admitted, refused: totals.refused }),
    cachedBlocks: p.gateway.cache.live(Date.now()).length,
    blocks: p.observer.liveBlocks(Date.now()),
    refusals: p.observer.refusals,
    overshoot: p.observer.overshoot,
    breaches: p.observer.breachCount,
    tenants: plan.map((t) => ({ ...t, ...traffic.counts.get(t.key)! })),
  };
}

/**
 * Closes the sidecar, lets the gateway send its last events, and waits (up to 20 s) until the
 * aggregator has committed everything in the usage topic, so the summary's counts are final. The
 * gateway and the aggregator then stop side by side (each waits out a Kafka fetch in flight).
 */
async function drain(p: Pipeline, lag: LagGauge): Promise<void> {
  await p.closeSidecar();
  const gatewayStopped = p.stopGateway(); // sends what is buffered first
  await until(async () => (p.gateway.emitter?.buffered ?? 0) === 0, 10_000);
  await until(async () => (lag.value = await consumerLag(p.admin, p.group, p.topics.usage).catch(() => undefined)) === 0, 20_000);
  await Promise.all([gatewayStopped, p.stopAggregator()]);
}

/** Polls `done` every 100 ms until it holds or `timeoutMs` has passed. */
async function until(done: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
}

function summarize(p: Pipeline, plan: TenantPlan[], traffic: Traffic, lag: LagGauge, run: RunResult, about: Pick<DemoSummary, 'policy' | 'product' | 'keyPrefix' | 'refusalStatus' | 'tenantSubject'>): DemoSummary {
  const refusalsByRule: DemoSummary['refusalsByRule'] = {};
  for (const [rule, m] of p.observer.refusals) refusalsByRule[rule] = Object.fromEntries(m);
  return {
    ...about, trafficMs: run.trafficMs, stoppedBy: run.stoppedBy, topics: p.topics, group: p.group,
    tenants: plan.map((t) => ({
      key: t.key, tenant: t.tenantKey, role: t.role, limits: t.limits, ratePerSec: Math.round(t.ratePerSec * 1_000) / 1_000, overLimit: t.overLimit,
      ...traffic.counts.get(t.key)!, ...limitsHit(p.observer, t.tenantKey),
    })),
    requests: traffic.totals(),
    events: {
      produced: p.gateway.emitter?.stats.sent ?? 0, dropped: p.gateway.emitter?.stats.dropped ?? 0,
      consumed: p.aggregator.stats.committed, fromBeforeRun: p.backlog, lagAtEnd: lag.value ?? null,
    },
    blocks: { published: p.observer.published.blocks, moved: p.observer.published.moved, unblocks: p.observer.published.unblocks, nearSnapshots: p.observer.published.near },
    refusalsByRule,
    overshoot: p.observer.overshoot,
    breaches: p.observer.breachCount,
  };
}

export const demoCommand: Command = {
  name: 'demo',
  summary: 'the main job: live traffic through a sidecar and an aggregator, with blocks, refusals and overshoot',
  help: HELP,
  async run(argv, io) {
    if (wantsHelp(argv)) {
      io.out(HELP);
      return EXIT.OK;
    }
    const opts = parseOptions(argv);
    const policy = compilePolicy(await loadPolicyFile(opts.policyFile));
    const identity = identityOf(policy);
    const plan = planTraffic(policy, identity); // before any service starts: a policy it cannot drive fails fast
    const policyLabel = relative(process.cwd(), opts.policyFile) || opts.policyFile;
    const say = opts.json ? io.err : io.out;

    say(`quotaflow demo — the ${product(policy)} policy (${policyLabel}) on live HTTP traffic. Bringing up Kafka and Redis…`);
    let forgetSignals: (() => void) | undefined;
    io.signal.addEventListener('abort', () => (forgetSignals = quitOnSecondCtrlC()), { once: true });
    const stack = await resolveStack({ env: io.env });
    const started = new Started();
    let held: HeldLogs | undefined;
    try {
      say(`  Kafka${stack.kafka.version ? ` ${stack.kafka.version}` : ''} (${stack.kafka.source}) at ${stack.brokers.join(',')} · Redis${stack.redis.version ? ` ${stack.redis.version}` : ''} (${stack.redis.source}) at ${stack.redisUrl}`);
      const p = await startPipeline(stack, policy, identity, opts, started, say);
      if (io.signal.aborted) return EXIT.OK;
      const total = plan.reduce((a, t) => a + t.ratePerSec, 0);
      const runaway = plan.find((t) => t.overLimit)!;
      say(`  traffic  ${plan.length} tenants (${identity.subject}), ${perSecText(total)} in all; "${runaway.key}" sends ${perSecText(runaway.ratePerSec)} against ${runaway.limits}\n`);

      const traffic = new Traffic(plan, new URL(p.sidecarUrl), identity, policy.refusal.status);
      started.add(() => traffic.stop());
      const lag = new LagGauge(p.admin, p.group, p.topics.usage);
      held = viewStream(opts).isTTY && process.stderr.isTTY ? holdLogs(io) : undefined;
      const run = await drive(p, plan, traffic, lag, opts, io, `quotaflow demo · ${product(policy)} policy`, held);
      const summary = summarize(p, plan, traffic, lag, run, { policy: policyLabel, product: product(policy), keyPrefix: opts.keyPrefix, refusalStatus: policy.refusal.status, tenantSubject: identity.subject });
      if (opts.json) io.out(JSON.stringify(summary, null, 2));
      else io.out(`\n${summaryText(summary, nextSteps(stack, opts, runaway))}`);
      if (run.fatal !== undefined) {
        io.err(`quotaflow demo: the aggregator stopped on an error Kafka will not retry: ${run.fatal instanceof Error ? run.fatal.message : String(run.fatal)}\n  → see the log above; check that Kafka is healthy and run the demo again`);
        return EXIT.FAILURE;
      }
      await started.stopAll();
      if (opts.keep && !io.signal.aborted) await keepStack(stack, say, io.signal);
      return EXIT.OK;
    } finally {
      await started.stopAll();
      await stack.stop();
      held?.restore();
      forgetSignals?.();
      say('Stopped everything the demo started.');
    }
  },
};

const product = (policy: CompiledPolicy) => clip(policy.product, 40);

/**
 * Once Ctrl-C has started the shutdown, the demo listens for signals itself until it is done. Under
 * `npm start` tsx sometimes relays to its child the Ctrl-C the child already got (when the child
 * reports it first), which with no listener left would end the process at once, before the summary:
 * a signal within half a second of the first is that echo, and is ignored. A later one is the user's
 * second Ctrl-C and quits at once (the stack's processes go with this one: see src/stack/process.ts).
 * (main.ts would be the natural home for this, for every command.)
 */
function quitOnSecondCtrlC(): () => void {
  const firstAt = Date.now();
  const onSignal = () => {
    if (Date.now() - firstAt > 500) process.exit(EXIT.INTERRUPTED);
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  return () => process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
}

async function keepStack(stack: Stack, say: (t: string) => void, signal: AbortSignal): Promise<void> {
  say(`\nThe stack stays up until Ctrl-C:\n  export KAFKA_BROKERS=${stack.brokers.join(',')}\n  export REDIS_URL=${stack.redisUrl}`);
  await untilAborted(signal);
}
