/**
 * The gateway SDK (DESIGN §4): `check(request)` decides locally, with no network on the request path.
 *
 *   1. resolve the request to its rule and counter (src/policy);
 *   2. refuse when the decision cache holds a live block on the counter, when this gateway's own
 *      admissions in the window already fill a limit (the global count can only be higher), or when
 *      a `near` snapshot is live and this gateway has spent its share of the room left;
 *   3. otherwise admit and count the admission locally;
 *   4. either way, queue a usage event (admitted, or refused with the decision that refused it).
 *
 * `check` returns a value and never throws: allow or refuse, the status, message, body and headers
 * the policy prescribes. Until the decision cache has read every live block (warm), `fallback`
 * decides: `local` (default) enforces the limits against this gateway's own admissions only, `open`
 * admits everything, `closed` refuses everything that a rule limits.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { context, metrics, propagation, trace, type Counter, type Histogram } from '@opentelemetry/api';
import { resolve, type CompiledLimit, type CompiledPolicy, type ResolveRequest, type OverrideLookup, type Resolved, type Unresolved } from '../policy/index.ts';
import { admittedHeaders, refuse, refuseUnidentified, type LimitReport } from '../refusal/index.ts';
import { MAX_EVENT_COST, isReservedKey, type DecisionRef, type Outcome, type UsageEvent } from '../events/index.ts';
import { topicNames } from '../kafka/topics.ts';
import { kafkaPort } from '../kafka/client.ts';
import type { KafkaSettings } from '../kafka/port.ts';
import { OverrideFeed } from '../overrides/feed.ts';
import { logger, type Logger } from '../log.ts';
import { ATTR, METER, METRIC } from '../telemetry/names.ts';
import { DecisionCache, type CachedBlock, type NearShare } from './decision-cache.ts';
import { DecisionFeed } from './decision-feed.ts';
import { Emitter } from './emitter.ts';
import { LocalCounts } from './local-counts.ts';

export type Fallback = 'local' | 'open' | 'closed';

/** Where a gateway's Kafka is and how to talk to it: the brokers, the client library and its settings. */
export interface GatewayKafka extends Omit<KafkaSettings, 'clientId'> {
  /** Default: quotaflow-gateway-<gateway id>. */
  clientId?: string;
}

export interface GatewayOptions {
  policy: CompiledPolicy;
  /** Kafka for usage events, decisions and overrides. Without it the gateway only counts locally. */
  kafka?: GatewayKafka;
  topicPrefix?: string;
  region?: string;
  gatewayId?: string;
  /** What to do until the decision cache is warm. Default `local`. */
  fallback?: Fallback;
  /** Usage events held while Kafka is slow or away. Default 100,000. */
  maxBuffered?: number;
  lingerMs?: number;
  /** Coalesce identical requests into one usage event with a count (default true; see emitter.ts). */
  coalesce?: boolean;
  /** Pack usage events into batch records (default true); false for aggregators older than batches. */
  batchRecords?: boolean;
  /**
   * An admitted request that takes this gateway's own count to this share of a limit (or any
   * request while a near snapshot is live) has its event sent without waiting for the linger, so
   * the decision it may cause comes sooner. Default 0.8; Infinity: only near snapshots hurry.
   */
  urgentShare?: number;
  /** Follow runtime overrides from quota.overrides. Default true. */
  followOverrides?: boolean;
  /**
   * Runtime overrides from somewhere else than quota.overrides (a gateway without Kafka, a test):
   * consulted when the gateway follows no overrides topic.
   */
  overrides?: OverrideLookup;
  clock?: () => number;
  log?: Logger;
}

export interface CheckRequest extends ResolveRequest {
  /**
   * The client's request id: echoed in json_error bodies and carried on the usage event. Absent,
   * the gateway mints one when the policy says so (refusal.request_id.mint).
   */
  requestId?: string;
  /** Requests this check stands for. Default 1. */
  cost?: number;
}

/** Why a check ended as it did (CheckResult.reason, and the outcome attribute of the checks metric). */
export const CHECK_REASONS = [
  'admitted',
  'blocked',
  'local-limit',
  'near-share',
  'shadow',
  'unlimited',
  'unresolved',
  'unidentified',
  'fallback-open',
  'fallback-closed',
] as const;
export type CheckReason = (typeof CHECK_REASONS)[number];

export interface CheckResult {
  allowed: boolean;
  /** 200 when allowed; the policy's refusal status otherwise. */
  status: number;
  /** Rate-limit headers to set on the response (allowed or refused). */
  headers: Record<string, string>;
  reason: CheckReason;
  /** Present on refusals. */
  message?: string;
  body?: string;
  contentType?: string;
  retryAfterSeconds?: number;
  rule?: string;
  api?: string | null;
  counterKey?: string;
  tenant?: string;
  /** Why an unresolved request was let through or refused (a missing subject, no matching rule). */
  detail?: string;
  /** The request's id: the client's, or one minted for it (also in `headers` when the policy sends it back). */
  requestId?: string;
}

export interface GatewayStats {
  checks: number;
  admitted: number;
  refused: number;
  unresolved: number;
}

type HeaderValue = string | readonly string[] | undefined;
const first = (v: HeaderValue): string | undefined => (v === undefined ? undefined : typeof v === 'string' ? v || undefined : v[0] || undefined);

/**
 * What X-RateLimit-Limit / -Remaining (and the IETF quota) report for an unlimited key: the largest
 * 32-bit integer, so a client that parses them as integers (as the TalkPilot document's own sample
 * does, warning below 5) sees a quota it never runs short of.
 */
export const UNLIMITED_QUOTA = 2_147_483_647;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One attributes object per outcome and per rule, made on first use. */
const OUTCOME_ATTRIBUTES: Partial<Record<CheckReason, Readonly<Record<string, string>>>> = {};
const outcomeAttributes = (reason: CheckReason) => (OUTCOME_ATTRIBUTES[reason] ??= Object.freeze({ [ATTR.outcome]: reason }));
const RULE_ATTRIBUTES = new Map<string, Readonly<Record<string, string>>>();
function ruleAttributes(rule: string): Readonly<Record<string, string>> {
  let a = RULE_ATTRIBUTES.get(rule);
  if (a === undefined) RULE_ATTRIBUTES.set(rule, (a = Object.freeze({ [ATTR.rule]: rule })));
  return a;
}

/** The outcome of every admitted request's event: one object, never changed (the emitter changes an event's cost and time only). */
const ADMITTED: Outcome = Object.freeze({ kind: 'admitted' });

const zeroTallies = () => Object.fromEntries(CHECK_REASONS.map((r) => [r, 0])) as Record<CheckReason, number>;

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/**
 * The time slice identical requests may be coalesced within: the greatest common divisor of every
 * bucket size of the policy, so every bucket boundary is a slice boundary and a coalesced event's
 * requests share a bucket in every window. (A runtime override with a bucket size outside the
 * policy's may see a coalesced event's requests moved by less than one slice.)
 */
export function coalesceSliceMs(policy: CompiledPolicy): number {
  let slice = 0;
  for (const rule of policy.rules) for (const l of rule.limits) slice = gcd(l.bucketMs, slice);
  for (const o of policy.overrides.values()) for (const l of o.limits) slice = gcd(l.bucketMs, slice);
  return slice || 1_000;
}

export class Gateway {
  readonly id: string;
  readonly region: string;
  readonly policy: CompiledPolicy;
  readonly cache = new DecisionCache();
  readonly local = new LocalCounts();
  readonly stats: GatewayStats = { checks: 0, admitted: 0, refused: 0, unresolved: 0 };
  readonly emitter: Emitter | undefined;
  private readonly feed: DecisionFeed | undefined;
  private readonly overrides: OverrideFeed | undefined;
  /** Where resolution looks up runtime overrides: the feed, else `opts.overrides`. */
  private readonly overrideLookup: OverrideLookup | undefined;
  private readonly fallback: Fallback;
  private readonly clock: () => number;
  private readonly log: Logger;
  private sweeper: NodeJS.Timeout | undefined;
  private connecting: Promise<void> | undefined;
  private stopped = false;
  private readonly instruments: { checks: Counter; refusals: Counter; lag: Histogram };
  /** Checks by outcome and refusals by rule not yet added to the SDK's counters (see count()). */
  private readonly tallies = { checks: zeroTallies(), refusals: new Map<string, number>() };
  /** Minted request ids: the policy's prefix, this gateway's random part, then a sequence number (base 36). */
  private readonly idStem: string;
  private idSeq = 0;
  /** This gateway's own count per limit of the check in progress (reused: check() allocates no array for it). */
  private readonly ownCounts: number[] = [];
  private readonly urgentShare: number;

  constructor(opts: GatewayOptions) {
    this.policy = opts.policy;
    this.region = opts.region ?? 'local';
    this.id = opts.gatewayId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.fallback = opts.fallback ?? 'local';
    this.urgentShare = opts.urgentShare ?? 0.8;
    this.clock = opts.clock ?? Date.now;
    this.log = opts.log ?? logger('gateway');
    this.idStem = this.policy.requestId.prefix + randomBytes(8).readBigUInt64BE().toString(36).padStart(13, '0').slice(0, 10);
    if (opts.kafka) {
      const topics = topicNames(opts.topicPrefix);
      const kafka = kafkaPort({ ...opts.kafka, clientId: opts.kafka.clientId ?? `quotaflow-gateway-${this.id}` });
      this.emitter = new Emitter({
        kafka,
        topic: topics.usage,
        maxBuffered: opts.maxBuffered,
        lingerMs: opts.lingerMs,
        coalesce: opts.coalesce,
        coalesceSliceMs: coalesceSliceMs(this.policy),
        batchRecords: opts.batchRecords,
        log: this.log.child('emitter'),
      });
      this.feed = new DecisionFeed({ kafka, topic: topics.decisions, cache: this.cache, clock: this.clock, log: this.log.child('decisions') });
      if (opts.followOverrides ?? true) this.overrides = new OverrideFeed(kafka, topics.overrides, this.log.child('overrides'));
    }
    this.overrideLookup = this.overrides ?? opts.overrides;
    const meter = metrics.getMeter(METER);
    this.instruments = {
      checks: meter.createCounter(METRIC.gatewayChecks, { description: 'requests checked, by outcome' }),
      refusals: meter.createCounter(METRIC.gatewayRefusals, { description: 'requests refused, by rule' }),
      lag: meter.createHistogram(METRIC.gatewayDecisionLag, { unit: 'ms', description: 'from a decision being made (event time) to this gateway applying it' }),
    };
    const cacheSize = meter.createObservableGauge(METRIC.gatewayCacheSize, { description: 'blocks held in the decision cache' });
    const bufferDepth = meter.createObservableGauge(METRIC.gatewayBufferDepth, { description: 'usage events waiting for Kafka' });
    const drops = meter.createObservableCounter(METRIC.gatewayDrops, { description: 'usage events dropped because the buffer was full' });
    // Runs first thing in every collection, before the SDK reads its synchronous counters: the
    // checks tallied since the last one are added to them here, so they are in this collection.
    meter.addBatchObservableCallback(
      (o) => {
        this.flushTallies();
        o.observe(cacheSize, this.cache.size);
        o.observe(bufferDepth, this.emitter?.buffered ?? 0);
        o.observe(drops, this.emitter?.stats.dropped ?? 0);
      },
      [cacheSize, bufferDepth, drops],
    );
    this.feed?.on('decision', (d, appliedAt) => this.instruments.lag.record(Math.max(0, appliedAt - d.decidedAt)));
  }

  /** True once every block that was live when the gateway started is in its cache. */
  get warm(): boolean {
    return this.feed?.isWarm ?? true;
  }

  /**
   * Starts sending events and following decisions. Returns at once: `check` works from the first
   * moment (under the fallback until warm); a Kafka that is away is retried in the background.
   */
  start(): void {
    if (this.connecting) return;
    this.emitter?.start();
    this.sweeper = setInterval(() => {
      const now = this.clock();
      this.cache.sweep(now);
      this.local.sweep(now);
    }, 10_000);
    this.sweeper.unref();
    this.connecting = this.connect();
  }

  private async connect(): Promise<void> {
    let backoff = 300;
    for (const part of [this.overrides, this.feed]) {
      while (part && !this.stopped) {
        try {
          await part.start();
          break;
        } catch (e) {
          this.log.warn('cannot reach Kafka to follow decisions; retrying (checks use the fallback until then)', {
            error: e,
            fallback: this.fallback,
            retryInMs: backoff,
          });
          await sleep(backoff);
          backoff = Math.min(5_000, backoff * 2);
        }
      }
    }
  }

  /** Resolves when the decision cache is warm, or rejects after `timeoutMs`. */
  async whenWarm(timeoutMs = 30_000): Promise<void> {
    if (!this.feed) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.feed.whenWarm(),
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`the decision cache was not warm after ${timeoutMs} ms`)), timeoutMs))),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  async stop(timeoutMs = 5_000): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweeper);
    await this.connecting;
    await Promise.all([this.emitter?.stop(timeoutMs), this.feed?.stop(), this.overrides?.stop()]);
  }

  check(request: CheckRequest): CheckResult {
    this.stats.checks++;
    const now = this.clock();
    const ids = this.policy.requestId;
    let requestId = request.requestId;
    if (requestId === undefined && ids.mint === 'always') requestId = this.mintRequestId();
    const r = resolve(this.policy, request, this.overrideLookup);
    if (r.kind === 'unresolved') return this.unresolved(r, requestId);
    const cost = request.cost ?? 1;
    if (r.unlimited) {
      this.emit(r, request, now, cost, ADMITTED, requestId);
      return this.allowed(r, 'unlimited', this.unlimitedHeaders(r, now), requestId);
    }
    const { limits } = r;
    const cold = this.feed !== undefined && !this.feed.isWarm;
    if (cold && this.fallback === 'open') {
      this.local.add(r.counterKey, limits, now, cost);
      this.emit(r, request, now, cost, ADMITTED, requestId);
      return this.allowed(r, 'fallback-open', this.admittedHeaders(r, now, this.near(r, now)), requestId);
    }
    if (cold && this.fallback === 'closed') {
      requestId ??= this.mintForRefusal();
      const states = limits.map((l) => ({ limit: l.limit, windowMs: l.windowMs, name: l.name, count: l.limit, resetAt: now + 1_000, blocked: true }));
      return this.refused(r, 'fallback-closed', refuse({ refusal: this.policy.refusal, limits: states, now, requestId }), requestId);
    }

    const block = cold ? undefined : this.cache.get(r.counterKey, now);
    const own = this.ownCounts;
    this.local.countsInto(r.counterKey, limits, now, own);
    let localIndex = -1;
    for (let i = 0; i < limits.length; i++) {
      if (own[i]! + cost > limits[i]!.limit) {
        localIndex = i;
        break;
      }
    }
    // Near the limit: only this gateway's share of the room left (see decision-cache.ts).
    const near = block === undefined && localIndex < 0 && !cold ? this.near(r, now) : undefined;
    const nearSpent = near !== undefined && near.spent + cost > near.share;
    if (block === undefined && localIndex < 0 && !nearSpent) {
      if (near !== undefined) this.cache.spend(near, now, cost);
      this.local.add(r.counterKey, limits, now, cost);
      // Near a limit (a live snapshot says so, or this gateway's own count does): ship the event now,
      // so the aggregator's decision does not wait for the emitter's linger.
      let urgent = near !== undefined;
      for (let i = 0; i < limits.length && !urgent; i++) urgent = own[i]! + cost >= limits[i]!.limit * this.urgentShare;
      this.emit(r, request, now, cost, ADMITTED, requestId, urgent);
      return this.allowed(r, 'admitted', this.admittedHeaders(r, now, near), requestId);
    }

    const states = this.refusalStates(
      limits,
      this.local.counts(r.counterKey, limits, now),
      block,
      localIndex,
      r.counterKey,
      now,
      cost,
      nearSpent ? near : undefined,
    );
    const ref: DecisionRef = block
      ? { counterKey: r.counterKey, windowMs: block.windowMs, decidedAt: block.decidedAt }
      : localIndex >= 0
        ? { counterKey: r.counterKey, windowMs: limits[localIndex]!.windowMs, decidedAt: now }
        : { counterKey: r.counterKey, windowMs: near!.windowMs, decidedAt: near!.decidedAt };
    if (r.shadow) {
      this.local.add(r.counterKey, limits, now, cost);
      this.emit(r, request, now, cost, { kind: 'shadow_refused', decision: ref }, requestId);
      return this.allowed(r, 'shadow', this.admittedHeaders(r, now, this.near(r, now)), requestId);
    }
    requestId ??= this.mintForRefusal();
    this.emit(r, request, now, cost, { kind: 'refused', decision: ref }, requestId);
    return this.refused(
      r,
      block ? 'blocked' : localIndex >= 0 ? 'local-limit' : 'near-share',
      refuse({ refusal: this.policy.refusal, limits: states, now, requestId }),
      requestId,
    );
  }

  /** A new request id in the policy's style ("req_" and 16 lowercase letters and digits). */
  private mintRequestId(): string {
    return this.idStem + (this.idSeq++).toString(36).padStart(6, '0');
  }

  private mintForRefusal(): string | undefined {
    return this.policy.requestId.mint === 'never' ? undefined : this.mintRequestId();
  }

  /** Adds the request id header when the policy sends ids back on this response. */
  private withRequestId(headers: Record<string, string>, requestId: string | undefined, refused: boolean): Record<string, string> {
    const { mint, responseHeader } = this.policy.requestId;
    if (requestId !== undefined && (mint === 'always' || (refused && mint === 'refusals'))) headers[responseHeader] = requestId;
    return headers;
  }

  /**
   * A request the policy cannot place. Its rule's subjects are absent: the rule's `unidentified`
   * decides (refuse here, or admit uncounted; `anonymous` never gets here). No rule applies at all:
   * admitted uncounted. Either way no usage event: there is no tenant to count it under.
   */
  private unresolved(r: Unresolved, requestId: string | undefined): CheckResult {
    const unidentified = r.rule?.unidentified;
    if (unidentified?.action === 'refuse' && r.missing.length > 0) {
      requestId ??= this.mintForRefusal();
      const refusal = refuseUnidentified(this.policy.refusal, unidentified, r.missing, requestId);
      this.stats.refused++;
      this.count('unidentified');
      this.countRefusal(r.rule!.id);
      return {
        allowed: false,
        status: refusal.status,
        headers: this.withRequestId({}, requestId, true),
        reason: 'unidentified',
        message: refusal.message,
        body: refusal.body,
        contentType: refusal.contentType,
        rule: r.rule!.id,
        api: r.api?.name ?? null,
        detail: r.reason,
        requestId,
      };
    }
    this.stats.unresolved++;
    this.count('unresolved');
    return {
      allowed: true,
      status: 200,
      headers: this.withRequestId({}, requestId, false),
      reason: 'unresolved',
      detail: r.reason,
      rule: r.rule?.id,
      api: r.api?.name ?? null,
      requestId,
    };
  }

  /** The live near snapshot of the counter, unless it was made under other limits (an override changed them since). */
  private near(r: Resolved, now: number): NearShare | undefined {
    const near = this.cache.near(r.counterKey, now);
    if (near === undefined) return undefined;
    for (const l of r.limits) if (l.windowMs === near.windowMs && l.limit === near.limit) return near;
    return undefined;
  }

  /**
   * An unlimited key's headers: every limit of its rule reported as UNLIMITED_QUOTA with all of it
   * remaining, resetting when the window does (fixed) or now (rolling: nothing of it is counted).
   */
  private unlimitedHeaders(r: Resolved, now: number): Record<string, string> {
    const states: LimitReport[] = r.rule.limits.map((l) => ({
      limit: UNLIMITED_QUOTA,
      windowMs: l.windowMs,
      name: l.name,
      count: 0,
      resetAt: l.kind === 'fixed' ? (Math.floor(now / l.windowMs) + 1) * l.windowMs : now,
    }));
    return admittedHeaders({ refusal: this.policy.refusal, limits: states, now });
  }

  /**
   * Headers for an admitted request: each limit with this gateway's best estimate of its count, its
   * own admissions in the window or, near a limit, the global count of the last snapshot plus what
   * it admitted against it, whichever is higher. `near` is the counter's live near snapshot (this.near).
   */
  private admittedHeaders(r: Resolved, now: number, near: NearShare | undefined): Record<string, string> {
    const own = this.local.counts(r.counterKey, r.limits, now);
    const states: LimitReport[] = r.limits.map((l, i) => {
      const count = near !== undefined && near.windowMs === l.windowMs ? Math.max(own[i]!.count, near.observed + near.spent) : own[i]!.count;
      return { limit: l.limit, windowMs: l.windowMs, name: l.name, count, resetAt: own[i]!.reset };
    });
    return admittedHeaders({ refusal: this.policy.refusal, limits: states, now });
  }

  private refusalStates(
    limits: readonly CompiledLimit[],
    own: { count: number; reset: number }[],
    block: CachedBlock | undefined,
    localIndex: number,
    counterKey: string,
    now: number,
    cost: number,
    near?: NearShare,
  ): LimitReport[] {
    // When this check's whole cost fits, not just one more request; a cost above the limit never
    // fits, so the client is sent a window away rather than an "Infinity" Retry-After.
    let localUntil = localIndex >= 0 ? this.local.until(counterKey, limits, now, cost) : now;
    if (!Number.isFinite(localUntil)) localUntil = now + limits[localIndex]!.windowMs;
    // The block's window; if the limits changed since it was decided (an override), the longest one.
    let blockIndex = block === undefined ? -1 : limits.findIndex((l) => l.windowMs === block.windowMs);
    if (block !== undefined && blockIndex < 0) blockIndex = limits.reduce((best, l, i) => (l.windowMs > limits[best]!.windowMs ? i : best), 0);
    return limits.map((l, i) => {
      const s: LimitReport = { limit: l.limit, windowMs: l.windowMs, name: l.name, count: own[i]!.count, resetAt: own[i]!.reset };
      if (block !== undefined && i === blockIndex) {
        s.count = Math.max(s.count, block.observed, l.limit);
        s.resetAt = block.until;
        s.blocked = true;
      } else if (i === localIndex) {
        s.resetAt = Math.max(localUntil, now + 1);
        s.blocked = true;
      } else if (near !== undefined && localIndex < 0 && near.windowMs === l.windowMs) {
        // This gateway's share is spent: the count is close enough to the limit to call it full here.
        s.count = Math.max(s.count, near.observed, l.limit);
        s.resetAt = near.until;
        s.blocked = true;
      }
      return s;
    });
  }

  private allowed(r: Resolved, reason: CheckReason, headers: Record<string, string>, requestId: string | undefined): CheckResult {
    this.stats.admitted++;
    this.count(reason);
    const result: CheckResult = {
      allowed: true,
      status: 200,
      headers: this.withRequestId(headers, requestId, false),
      reason,
      rule: r.rule.id,
      api: r.api?.name ?? null,
      counterKey: r.counterKey,
      tenant: r.tenantKey,
    };
    if (requestId !== undefined) result.requestId = requestId;
    return result;
  }

  private refused(r: Resolved, reason: CheckReason, refusal: ReturnType<typeof refuse>, requestId: string | undefined): CheckResult {
    this.stats.refused++;
    this.count(reason);
    this.countRefusal(r.rule.id);
    const result: CheckResult = {
      allowed: false,
      status: refusal.status,
      headers: this.withRequestId(refusal.headers, requestId, true),
      reason,
      message: refusal.message,
      body: refusal.body,
      contentType: refusal.contentType,
      retryAfterSeconds: refusal.retryAfterSeconds,
      rule: r.rule.id,
      api: r.api?.name ?? null,
      counterKey: r.counterKey,
      tenant: r.tenantKey,
    };
    if (requestId !== undefined) result.requestId = requestId;
    return result;
  }

  /**
   * Counts a check's outcome. The SDK's Counter.add hashes its attributes on every call, which cost
   * more than the rest of an admitted check's bookkeeping; a plain tally costs next to nothing and
   * reaches the same counters when the SDK collects (flushTallies).
   */
  private count(reason: CheckReason): void {
    this.tallies.checks[reason]++;
  }

  private countRefusal(rule: string): void {
    const { refusals } = this.tallies;
    refusals.set(rule, (refusals.get(rule) ?? 0) + 1);
  }

  /** Adds what was tallied since the last call to the SDK's counters. */
  private flushTallies(): void {
    const { checks, refusals } = this.tallies;
    for (const reason of CHECK_REASONS) {
      const n = checks[reason];
      if (n === 0) continue;
      checks[reason] = 0;
      this.instruments.checks.add(n, outcomeAttributes(reason));
    }
    for (const [rule, n] of refusals) this.instruments.refusals.add(n, ruleAttributes(rule));
    refusals.clear();
  }

  private emit(r: Resolved, request: CheckRequest, now: number, cost: number, outcome: Outcome, requestId: string | undefined, urgent = false): void {
    if (!this.emitter) return;
    const event: UsageEvent = {
      schemaVersion: 1,
      eventTime: now,
      region: this.region,
      gatewayId: this.id,
      subjects: this.subjects(r, request),
      api: r.api?.name ?? null,
      cost,
      outcome,
      policyVersion: this.policy.version,
    };
    if (request.method !== undefined) event.method = request.method;
    if (request.path !== undefined) event.path = request.path;
    if (requestId !== undefined) event.requestId = requestId;
    let headers: Record<string, string> | undefined;
    const active = context.active();
    if (trace.getSpanContext(active) !== undefined) {
      headers = {};
      propagation.inject(active, headers);
    }
    // Coalescing candidates: on this gateway's own count of the counter, or by counter key for one it does not hold.
    const group = this.local.coalesceSlot(r.counterKey, r.limits) ?? r.counterKey;
    // An event stands for at most MAX_EVENT_COST requests (the schema's bound): a larger check is split.
    for (let left = cost - MAX_EVENT_COST; left > 0; left -= MAX_EVENT_COST) {
      this.emitter.enqueue(r.tenantKey, { ...event, cost: Math.min(left, MAX_EVENT_COST) }, headers, false, group);
    }
    event.cost = Math.min(cost, MAX_EVENT_COST);
    this.emitter.enqueue(r.tenantKey, event, headers, urgent, group);
  }

  /**
   * Every subject the policy's identity can read from this request, not only the ones its rule needs,
   * so a replay under another policy can count the event under other scopes.
   */
  private subjects(r: Resolved, request: CheckRequest): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, source] of this.policy.subjects) {
      let v = request.subjects?.[name] ?? undefined;
      if (v === undefined && source.header !== undefined && request.headers) v = first(request.headers[source.header]);
      if (v === undefined && source.param !== undefined) v = r.params[source.param] || undefined;
      if (v === undefined && source.query !== undefined && request.query) v = first(request.query[source.query]);
      if (v !== undefined) out[name] = v;
    }
    out[r.tenant.subject] = r.tenant.value;
    for (const s of r.scope) out[s.subject] = s.value;
    // Reserved names (__proto__, constructor, prototype) are never data: the aggregator would
    // dead-letter the event, and `out[k] = v` with __proto__ would not even add a key.
    const given = request.subjects;
    if (given)
      for (const k in given) {
        const v = given[k];
        if (typeof v === 'string' && Object.hasOwn(given, k) && !isReservedKey(k) && !Object.hasOwn(out, k)) out[k] = v;
      }
    return out;
  }
}
