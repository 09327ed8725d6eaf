/**
 * Gateway benchmark on the real components (Gateway, DecisionCache, Aggregator, a real Kafka broker
 * and Redis), each figure the median of several runs with its spread, beside a baseline measured in
 * the same run. Writes ops/bench/results/gateway.md. Run: npx tsx ops/bench/gateway.ts [--quick]
 *
 *   1. check() throughput on one core, allowed and refused paths, with the emitter sending every
 *      usage event to Kafka in the background; per-check p50/p99; memory per cached block;
 *   2. peers on the same Redis: an Envoy-style limiter (one pipelined INCRBY + EXPIRE round trip
 *      per request) and rate-limiter-flexible's RateLimiterRedis (one consume() per request);
 *   3. decision latency: the crossing check on one gateway → a block in the cache of every gateway;
 *   4. overshoot: 8 gateways at 10x a key's limit rate, admitted requests over the limit per window.
 */
import os from 'node:os';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import type { Admin, Kafka } from 'kafkajs';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { Aggregator } from '../../src/aggregator/aggregator.ts';
import { progress, table, type Progress } from '../../src/cli/ui.ts';
import type { BreachRecord, Decision } from '../../src/events/index.ts';
import { DecisionCache } from '../../src/gateway/decision-cache.ts';
import { Gateway, type CheckRequest } from '../../src/gateway/gateway.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { ensureTopics, topicNames, topicSpecs } from '../../src/kafka/topics.ts';
import { configureLogging, logger, type Level } from '../../src/log.ts';
import { compilePolicy, parsePolicyText, resolve, type CompiledPolicy, type Resolved } from '../../src/policy/index.ts';
import { resolveStack, type Stack } from '../../src/stack/index.ts';
import { createRedisClient, openUsageStore, type ClosableUsageStore, type RedisClient } from '../../src/store/index.ts';
import { whenReady } from '../../src/store/client.ts';
import {
  benchArgs, bytes, checkAbort, cleanRedis, collect, elapsedS, generatedLine, int, LOGS_HELP, machineLine, mdTable, median, pct, perSec, ratio, redisVersion, runInfo,
  runMain, SERVICES_HELP, sleep, spread, stopOnCtrlC, wholeNumber, writeReport, type Figure,
} from './common.ts';

const SELF = fileURLToPath(import.meta.url);
const HERE = dirname(SELF);

const HELP = `Usage: npx tsx ops/bench/gateway.ts [--quick] [--runs N] [--out FILE]

Benchmarks the gateway on real services and writes a markdown report:
  1. check() per second on one core, allowed and refused paths (usage events enqueued and sent to
     Kafka in the background), p50/p99 per check, memory per cached block;
  2. peers in the same run, on the same Redis: an Envoy-style limiter (one pipelined INCRBY +
     EXPIRE per request) and rate-limiter-flexible's RateLimiterRedis (one consume() per request),
     each at several concurrencies, the best one taken;
  3. decision latency: the check that reaches a limit on one gateway → a block in every gateway's
     cache (3 gateways, one in-process aggregator);
  4. overshoot: 8 gateways sending 10x a key's limit rate, requests admitted over the limit per window.
Each figure is the median of several runs, with min–max.

${SERVICES_HELP}

Options:
  --quick     one run, shorter runs, one 5 s overshoot window (about a minute on 2 quiet cores)
  --runs N    runs per figure (default 3; 1 with --quick)
  --out FILE  where to write the report (default ops/bench/results/gateway.md)
  -h, --help  this text

${LOGS_HELP}
`;

// ─── sizes ──────────────────────────────────────────────────────────────────────────────────────

interface Sizes {
  runs: number;
  /** Timed checks per path and run, and the JIT warm-up before the first. */
  checkMs: number;
  warmupMs: number;
  /** Distinct API keys the checks rotate over. */
  keys: number;
  memoryBlocks: number;
  /** How long each peer runs at each concurrency, and the concurrencies (requests in flight). */
  peerMs: number;
  concurrencies: number[];
  decisionSamples: number;
  /** A new crossing starts this often (ms) during the decision-latency runs. */
  decisionEveryMs: number;
  decisionGateways: number;
  overshootGateways: number;
  overshootLimits: number[];
  windowMs: number;
  windowsPerRun: number;
  /** Offered load as a multiple of the limit rate. */
  loadFactor: number;
}

const FULL: Sizes = {
  runs: 3, checkMs: 3_000, warmupMs: 1_000, keys: 10_000, memoryBlocks: 100_000, peerMs: 2_000, concurrencies: [16, 64, 256],
  decisionSamples: 150, decisionEveryMs: 20, decisionGateways: 3,
  overshootGateways: 8, overshootLimits: [100, 1_000], windowMs: 10_000, windowsPerRun: 2, loadFactor: 10,
};
const QUICK: Sizes = {
  ...FULL, runs: 1, checkMs: 2_000, warmupMs: 500, peerMs: 1_000, decisionSamples: 50, windowMs: 5_000, windowsPerRun: 1,
};

// ─── small helpers ──────────────────────────────────────────────────────────────────────────────

/** Label suffix of the overshoot streams run with near-limit shares off. */
const NO_SHARE = ' (near shares off)';
const tick = () => new Promise<void>((r) => setImmediate(r));
/** A count, or the mean of two middle counts (a median of an even number of them). */
const count = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: 1 });
/** A duration given in ms, in the unit that suits it. */
const dur = (ms: number) => (ms < 0.001 ? `${Math.round(ms * 1e6)} ns` : ms < 1 ? `${(ms * 1e3).toFixed(ms < 0.01 ? 2 : 1)} µs` : ms < 100 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`);
/** For times read by the 1 ms cache poll: below a millisecond is below what it can tell. */
const polled = (ms: number) => (ms < 1 ? '< 1 ms' : dur(ms));

/** Waits until `done()` holds, polling every `everyMs`; throws with `what` after `timeoutMs`. */
async function until(done: () => boolean, timeoutMs: number, what: string, everyMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    checkAbort();
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

// ─── the policy ─────────────────────────────────────────────────────────────────────────────────

/**
 * One API per measurement, each with its own rule: the checks' keys stay far under two limits shaped
 * like TalkPilot's (minute and hour, fixed windows); `Tight` crosses at its 3rd request; the
 * overshoot limits are fixed windows so "per window" is exact.
 */
function benchPolicy(sizes: Sizes): CompiledPolicy {
  const windowS = `${sizes.windowMs / 1000}s`;
  const overshootRules = sizes.overshootLimits.map((limit) => `
  - id: over-${limit}
    apis: [Over${limit}]
    scope: api_key
    limits: [{ limit: ${limit}, window: ${windowS}, kind: fixed }]`).join('');
  const text = `
version: "bench"
product: quotaflow gateway benchmark
identity:
  api_key: { header: X-API-Key }
tenant: api_key
apis:
  - { name: Roomy }
  - { name: Tight }
${sizes.overshootLimits.map((l) => `  - { name: Over${l} }`).join('\n')}
refusal:
  status: 429
  body: json_error
  error_code: RATE_LIMITED
  message: Rate limit exceeded. Try again in {retry_after} seconds.
  headers: [retry-after, x-ratelimit]
rules:
  - id: roomy
    apis: [Roomy]
    scope: api_key
    limits: [{ limit: 1000000, window: 60s, kind: fixed }, { limit: 10000000, window: 1h, kind: fixed }]
  - id: tight
    apis: [Tight]
    scope: api_key
    limits: [{ limit: 3, window: 60s }]${overshootRules}
`;
  return compilePolicy(parsePolicyText(text, 'gateway-bench.yaml'));
}

function resolved(policy: CompiledPolicy, request: CheckRequest): Resolved {
  const r = resolve(policy, request);
  if (r.kind !== 'resolved') throw new Error(`the bench policy does not resolve ${JSON.stringify(request)}: ${r.reason}`);
  return r;
}

function blockDecision(r: Resolved, now: number, untilMs: number): Decision {
  const limit = r.limits[0]!;
  return {
    schemaVersion: 1, counterKey: r.counterKey, tenant: r.tenantKey, rule: r.rule.id, window: limit.window, windowMs: limit.windowMs,
    windowKind: limit.kind, state: 'block', until: untilMs, limit: limit.limit, observed: limit.limit,
    message: `Rate limit exceeded. Try again in ${Math.ceil((untilMs - now) / 1000)} seconds.`, policyVersion: 'bench', region: 'bench', decidedAt: now,
  };
}

// ─── the environment every section shares ──────────────────────────────────────────────────────

interface Env {
  stack: Stack;
  kafka: Kafka;
  admin: Admin;
  policy: CompiledPolicy;
  runId: string;
  redisPrefix: string;
  topicsCreated: string[];
  ui: Progress;
  sizes: Sizes;
}

async function newTopics(env: Env, prefix: string): Promise<void> {
  const created = await ensureTopics(env.admin, topicSpecs(topicNames(prefix), { usagePartitions: 6 }));
  env.topicsCreated.push(...created);
}

async function startGateway(env: Env, prefix: string, id: string, clock?: () => number): Promise<Gateway> {
  const gateway = new Gateway({ policy: env.policy, kafka: env.kafka, topicPrefix: prefix, gatewayId: id, region: 'bench', clock, log: logger(`gateway.${id}`) });
  gateway.start();
  await gateway.whenWarm(60_000);
  return gateway;
}

// ─── 1. checks per second on one core ───────────────────────────────────────────────────────────

interface CheckRun {
  /** Checks per second over the whole run, until every usage event had reached Kafka. */
  sustained: number;
  /** Checks per second counting only the time spent inside the check loop. */
  checkOnly: number;
  p50: number;
  p99: number;
  checks: number;
  dropped: number;
  /** Share of the run's time the loop waited for the emitter to catch up. */
  waitedShare: number;
  /** Event-loop utilization over the run: below 1, the process sat waiting (for Kafka's acks). */
  busyShare: number;
}

const LAT_CAPACITY = 1 << 21;
const latencies = new Float64Array(LAT_CAPACITY);
let sink = 0;

/**
 * Calls check() in chunks, yielding to the event loop between chunks so the emitter sends on the
 * same core. When more than `HIGH_WATER` events wait, the loop waits for the emitter (a gateway
 * that outruns Kafka would drop events, which is not the throughput we want to quote).
 */
async function checkLoop(gateway: Gateway, requests: CheckRequest[], ms: number, expectAllowed: boolean, ui: Progress, label: string): Promise<CheckRun> {
  const CHUNK = 512;
  const HIGH_WATER = 40_000;
  const LOW_WATER = 4_000;
  const emitter = gateway.emitter!;
  const dropped0 = emitter.stats.dropped;
  let n = 0;
  let busy = 0;
  let waited = 0;
  let allowed = 0;
  let i = 0;
  let lastUi = 0;
  const elu0 = performance.eventLoopUtilization();
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    checkAbort();
    const c0 = performance.now();
    let prev = c0;
    for (let j = 0; j < CHUNK; j++) {
      const r = gateway.check(requests[i]!);
      const t = performance.now();
      if (n + j < LAT_CAPACITY) latencies[n + j] = t - prev;
      prev = t;
      if (r.allowed) allowed++;
      sink += r.status;
      if (++i === requests.length) i = 0;
    }
    busy += prev - c0;
    n += CHUNK;
    await tick();
    if (emitter.buffered > HIGH_WATER) {
      const w0 = performance.now();
      while (emitter.buffered > LOW_WATER) await sleep(1);
      waited += performance.now() - w0;
    }
    if (prev - lastUi > 250) {
      lastUi = prev;
      ui.update(`${label}  ${int(n)} checks  ${perSec((n * 1000) / (prev - t0))} sustained, ${perSec((n * 1000) / busy)} in check()  (${int(emitter.buffered)} events waiting for Kafka)`);
    }
  }
  // The run ends when every usage event it produced is in Kafka.
  const w0 = performance.now();
  await until(() => emitter.buffered === 0, 60_000, 'the emitter to send every usage event', 1);
  waited += performance.now() - w0;
  const elapsed = performance.now() - t0;
  const busyShare = performance.eventLoopUtilization(elu0).utilization;
  if (expectAllowed ? allowed !== n : allowed !== 0) throw new Error(`${label}: ${allowed} of ${n} checks were allowed, expected ${expectAllowed ? 'all' : 'none'}`);
  const lat = latencies.subarray(0, Math.min(n, LAT_CAPACITY)).sort();
  return {
    sustained: (n * 1000) / elapsed, checkOnly: (n * 1000) / busy, p50: pct(lat, 50), p99: pct(lat, 99), checks: n,
    dropped: emitter.stats.dropped - dropped0, waitedShare: waited / elapsed, busyShare,
  };
}

function timerOverheadMs(): number {
  const xs = new Float64Array(200_000);
  let prev = performance.now();
  for (let i = 0; i < xs.length; i++) {
    const t = performance.now();
    xs[i] = t - prev;
    prev = t;
  }
  return pct(xs.sort(), 50);
}

interface MemoryRun {
  perBlock: number;
  /** The least a cache could hold: Map<counterKey, until>. */
  minimalPerBlock: number;
  keyLength: number;
}

/** Heap growth per block after folding `n` block decisions (parsed from their JSON, as the feed does). */
function memoryPerBlock(policy: CompiledPolicy, n: number, runId: string): MemoryRun {
  const now = Date.now();
  const records: string[] = [];
  for (let i = 0; i < n; i++) {
    records.push(JSON.stringify(blockDecision(resolved(policy, { api: 'Roomy', subjects: { api_key: `mem-${runId}-${String(i).padStart(6, '0')}` } }), now, now + 3_600_000)));
  }
  const heap = () => {
    collect();
    return process.memoryUsage().heapUsed;
  };
  const before = heap();
  const cache = new DecisionCache();
  for (const r of records) cache.apply(JSON.parse(r) as Decision, now);
  const after = heap();
  if (cache.size !== n) throw new Error(`the cache holds ${cache.size} blocks, expected ${n}`);
  const minimal = new Map<string, number>();
  for (const r of records) {
    const d = JSON.parse(r) as Decision;
    minimal.set(d.counterKey, d.until);
  }
  const afterMinimal = heap();
  // Used after the last measurement, so none of the three is collected before it.
  sink += cache.size + minimal.size + records.length;
  const keyLength = (JSON.parse(records[0]!) as Decision).counterKey.length;
  return { perBlock: (after - before) / n, minimalPerBlock: (afterMinimal - after) / n, keyLength };
}

// ─── 2. peers: Redis-backed limiters, one round trip per request ────────────────────────────────

/** A limiter that asks Redis on every request, measured the same way whatever it is. */
interface Peer {
  /** Short name, in figure names and progress. */
  name: string;
  /** What one request does, for the report. */
  does: string;
  /** Sets the peer up on a connected client; the function makes one request for key index `k`, true when allowed. */
  open(redis: RedisClient, prefix: string): (k: number) => Promise<boolean>;
}

const PEER_WINDOW_S = 60;
/** Far above what a key reaches in a run: every request is allowed, so each peer measures its admit path. */
const PEER_LIMIT = 1_000_000_000;

const PEERS: readonly Peer[] = [
  {
    name: 'Envoy-style',
    does: `what Envoy's rate limit service does per request: a fixed-window counter per key, one pipelined INCRBY key 1 + EXPIRE key ${PEER_WINDOW_S} round trip, then a compare with the limit`,
    open: (redis, prefix) => async (k) => {
      const key = `${prefix}envoy:api_key_k-${k}_${Math.floor(Date.now() / (PEER_WINDOW_S * 1000)) * PEER_WINDOW_S}`;
      const replies = await redis.pipeline().incrby(key, 1).expire(key, PEER_WINDOW_S).exec();
      const [err, n] = replies?.[0] ?? [new Error('no reply')];
      if (err) throw err;
      return Number(n) <= PEER_LIMIT;
    },
  },
  {
    name: 'rate-limiter-flexible',
    does: `rate-limiter-flexible's RateLimiterRedis (ioredis storeClient, points ${int(PEER_LIMIT)}, duration ${PEER_WINDOW_S} s, no insurance limiter, no in-memory block): consume(key), one EVALSHA of its Lua script (SET NX EX, INCRBY, PTTL) per request`,
    open: (redis, prefix) => {
      const limiter = new RateLimiterRedis({ storeClient: redis, keyPrefix: `${prefix}rlflx`, points: PEER_LIMIT, duration: PEER_WINDOW_S });
      return async (k) => {
        try {
          await limiter.consume(`api_key_k-${k}`);
          return true;
        } catch (e) {
          // It rejects with a RateLimiterRes to say "limited", and with an Error when Redis fails.
          if (e instanceof RateLimiterRes) return false;
          throw e;
        }
      };
    },
  },
];

interface PeerRun {
  concurrency: number;
  rate: number;
  p50: number;
  p99: number;
  /** Redis server CPU (user + sys, INFO) per request, µs. */
  redisCpuUs: number;
}

async function redisCpuS(redis: RedisClient): Promise<number> {
  const text = await redis.info('cpu');
  const num = (name: string) => Number(new RegExp(`^${name}:(\\S+)`, 'm').exec(text)?.[1] ?? NaN);
  return num('used_cpu_user') + num('used_cpu_sys');
}

/**
 * `concurrency` requests in flight at once on one new connection, over `keys` keys, for `ms`; Redis's
 * CPU is read on `admin` before and after.
 */
async function peerRun(peer: Peer, url: string, admin: RedisClient, prefix: string, keys: number, concurrency: number, ms: number): Promise<PeerRun> {
  const redis = createRedisClient(url, { log: logger('bench.redis') });
  try {
    await whenReady(redis, 5_000, `connect to ${url}`);
    const request = peer.open(redis, prefix);
    await request(0); // the first call loads rate-limiter-flexible's script: not timed
    const cpu0 = await redisCpuS(admin);
    const lat: number[] = [];
    let n = 0;
    let refused = 0;
    const deadline = performance.now() + ms;
    const worker = async (w: number) => {
      for (let k = w; performance.now() < deadline; k += concurrency) {
        const s = performance.now();
        const allowed = await request(k % keys);
        lat.push(performance.now() - s);
        if (!allowed) refused++;
        n++;
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: concurrency }, (_, w) => worker(w)));
    const elapsed = performance.now() - t0;
    const cpu = (await redisCpuS(admin)) - cpu0;
    if (refused) throw new Error(`${peer.name} refused ${refused} of ${n} requests: the limit is meant to be out of reach`);
    lat.sort((a, b) => a - b);
    return { concurrency, rate: (n * 1000) / elapsed, p50: pct(lat, 50), p99: pct(lat, 99), redisCpuUs: (cpu * 1e6) / n };
  } finally {
    await redis.quit().catch(() => redis.disconnect());
  }
}

// ─── the aggregator, for sections 3 and 4 ───────────────────────────────────────────────────────

interface Pipeline {
  prefix: string;
  aggregator: Aggregator;
  store: ClosableUsageStore;
}

/** `nearRatio` 0 turns near-limit shares off: the same-run baseline for section 4. */
async function startPipeline(env: Env, nearRatio?: number, tag = ''): Promise<Pipeline> {
  const prefix = `bench-${env.runId}-agg${tag}.`;
  await newTopics(env, prefix);
  const store = await openUsageStore(env.stack.redisUrl, { keyPrefix: `${env.redisPrefix}${tag}` });
  const aggregator = new Aggregator({
    kafka: env.kafka, store, policy: env.policy, topics: topicNames(prefix), groupId: `bench-${env.runId}-aggregators${tag}`, region: 'bench',
    nearRatio, log: logger('aggregator'),
  });
  const assigned = new Promise<void>((r) => aggregator.once('assigned', () => r()));
  await aggregator.start();
  await Promise.race([assigned, sleep(30_000).then(() => { throw new Error('the aggregator did not join its consumer group within 30 s'); })]);
  return { prefix, aggregator, store };
}

/**
 * Drives one key to its limit on `from` and waits until every gateway caches the block: proves the
 * aggregator and every decision feed are consuming before anything is timed.
 */
async function probe(env: Env, from: Gateway, gateways: Gateway[], name: string): Promise<void> {
  const request: CheckRequest = { api: 'Tight', subjects: { api_key: `probe-${env.runId}-${name}` } };
  const r = resolved(env.policy, request);
  for (let i = 0; i < r.limits[0]!.limit; i++) from.check(request);
  await until(() => gateways.every((g) => g.cache.get(r.counterKey, Date.now()) !== undefined), 60_000, `a probe block to reach all ${gateways.length} gateways`);
}

// ─── 3. decision latency ────────────────────────────────────────────────────────────────────────

interface Crossing {
  counterKey: string;
  /** When the check that reached the limit returned. */
  at: number;
  /** emitter.stats.enqueued after it: the crossing is sent once `sent` reaches this. */
  enqueued: number;
  sentAt?: number;
  decidedAt?: number;
  seenAt: Array<number | undefined>;
  allAt?: number;
}

interface DecisionRun {
  p50: number;
  p95: number;
  p99: number;
  /** Stage medians: gateway → Kafka, Kafka → aggregator decision, decision → the last gateway's cache. */
  toKafka: number;
  toDecision: number;
  toCaches: number;
  /** Median gap between the first and the last gateway to cache the block. */
  firstToLast: number;
  /** The same three stages, medians over the slowest 5% of crossings. */
  tail: [number, number, number];
}

async function decisionRun(env: Env, pipeline: Pipeline, gateways: Gateway[], run: number): Promise<DecisionRun> {
  const { sizes, ui } = env;
  const from = gateways[0]!;
  const emitter = from.emitter!;
  const pending = new Map<string, Crossing>();
  const all: Crossing[] = [];
  const onSent = () => {
    const now = performance.now();
    for (const c of pending.values()) if (c.sentAt === undefined && emitter.stats.sent >= c.enqueued) c.sentAt = now;
  };
  const onDecision = (d: Decision) => {
    const c = pending.get(d.counterKey);
    if (c && d.state === 'block' && c.decidedAt === undefined) c.decidedAt = performance.now();
  };
  emitter.on('sent', onSent);
  pipeline.aggregator.on('decision', onDecision);
  // 1 ms polling of every gateway's cache: the latencies below carry up to ~1 ms of it.
  const poller = setInterval(() => {
    const now = performance.now();
    const wall = Date.now();
    for (const c of pending.values()) {
      let all = true;
      for (let g = 0; g < gateways.length; g++) {
        if (c.seenAt[g] === undefined && gateways[g]!.cache.get(c.counterKey, wall) !== undefined) c.seenAt[g] = now;
        if (c.seenAt[g] === undefined) all = false;
      }
      if (all) {
        c.allAt = now;
        pending.delete(c.counterKey);
      }
    }
  }, 1);
  try {
    for (let i = 0; i < sizes.decisionSamples; i++) {
      checkAbort();
      const request: CheckRequest = { api: 'Tight', subjects: { api_key: `dl-${env.runId}-${run}-${i}` } };
      const r = resolved(env.policy, request);
      const limit = r.limits[0]!.limit;
      for (let k = 0; k < limit - 1; k++) from.check(request);
      const result = from.check(request); // count == limit: the aggregator blocks on this event
      const c: Crossing = { counterKey: r.counterKey, at: performance.now(), enqueued: emitter.stats.enqueued, seenAt: gateways.map(() => undefined) };
      if (!result.allowed) throw new Error(`the crossing check of ${r.counterKey} was refused`);
      pending.set(c.counterKey, c);
      all.push(c);
      ui.update(`[3/4] decision latency, run ${run + 1}/${sizes.runs}: crossing ${i + 1}/${sizes.decisionSamples}, ${pending.size} not yet in every cache`);
      await sleep(sizes.decisionEveryMs);
    }
    await until(() => pending.size === 0, 60_000, `${pending.size} blocks to reach all ${gateways.length} gateways`);
  } finally {
    clearInterval(poller);
    emitter.off('sent', onSent);
    pipeline.aggregator.off('decision', onDecision);
  }
  const total = all.map((c) => c.allAt! - c.at).sort((a, b) => a - b);
  const stage = (cs: Crossing[], f: (c: Crossing) => number | undefined) => median(cs.map(f).filter((x): x is number => x !== undefined && x >= 0));
  const toKafka = (c: Crossing) => (c.sentAt === undefined ? undefined : c.sentAt - c.at);
  const toDecision = (c: Crossing) => (c.sentAt === undefined || c.decidedAt === undefined ? undefined : c.decidedAt - c.sentAt);
  const toCaches = (c: Crossing) => (c.decidedAt === undefined ? undefined : c.allAt! - c.decidedAt);
  const slow = all.filter((c) => c.allAt! - c.at >= pct(total, 95));
  return {
    p50: pct(total, 50), p95: pct(total, 95), p99: pct(total, 99),
    toKafka: stage(all, toKafka), toDecision: stage(all, toDecision), toCaches: stage(all, toCaches),
    firstToLast: stage(all, (c) => Math.max(...(c.seenAt as number[])) - Math.min(...(c.seenAt as number[]))),
    tail: [stage(slow, toKafka), stage(slow, toDecision), stage(slow, toCaches)],
  };
}

// ─── 4. overshoot ───────────────────────────────────────────────────────────────────────────────

interface Stream {
  label: string;
  limit: number;
  gateways: Gateway[];
  request: CheckRequest;
  counterKey: string;
  /** Requests per second, offered across its gateways. */
  rate: number;
  credit: number[];
  /** Admitted per fixed window (index floor(t / windowMs)). */
  admitted: Map<number, number>;
  refused: number;
  reasons: Map<string, number>;
}

interface OvershootSample {
  label: string;
  limit: number;
  window: number;
  admitted: number;
  overshoot: number;
  /** The aggregator's breach record for that window, if it arrived. */
  recorded: number | undefined;
}

interface OvershootRun {
  samples: OvershootSample[];
  /** Refusals by CheckResult.reason, per stream label. */
  reasons: Map<string, Map<string, number>>;
}

/** The last time an overshoot gateway read its clock: check() reads it once, first thing. */
let clockRead = 0;
const observedClock = () => (clockRead = Date.now());

async function overshootRun(env: Env, pipeline: Pipeline, gateways: Gateway[], run: number, suffix = ''): Promise<OvershootRun> {
  const { sizes, ui } = env;
  const W = sizes.windowMs;
  const stream = (label: string, limit: number, gws: Gateway[]): Stream => {
    label += suffix;
    const request: CheckRequest = { api: `Over${limit}`, subjects: { api_key: `os-${env.runId}-${run}-${label.replace(/\W+/g, '-')}` } };
    return {
      label, limit, gateways: gws, request, counterKey: resolved(env.policy, request).counterKey,
      rate: (sizes.loadFactor * limit * 1000) / W, credit: gws.map(() => 0), admitted: new Map(), refused: 0, reasons: new Map(),
    };
  };
  const smallest = Math.min(...sizes.overshootLimits);
  const streams = [
    ...sizes.overshootLimits.map((l) => stream(`${gateways.length} gateways, limit ${l}`, l, gateways)),
    stream(`1 gateway, limit ${smallest}`, smallest, [gateways[0]!]),
  ];
  const keys = new Set(streams.map((s) => s.counterKey));
  const breaches: BreachRecord[] = [];
  const onBreach = (b: BreachRecord) => {
    if (b.liftedAt !== null && keys.has(b.counterKey)) breaches.push(b);
  };
  pipeline.aggregator.on('breach', onBreach);
  // Start on a window boundary so every window measured is whole.
  const start = Math.ceil((Date.now() + 50) / W) * W;
  const end = start + sizes.windowsPerRun * W;
  try {
    while (Date.now() < start) {
      checkAbort();
      ui.update(`[4/4] overshoot, run ${run + 1}/${sizes.runs}: waiting ${((start - Date.now()) / 1000).toFixed(1)} s for a window boundary`);
      await sleep(Math.min(100, Math.max(1, start - Date.now())));
    }
    let last = Date.now();
    let lastUi = 0;
    while (Date.now() < end) {
      checkAbort();
      await sleep(2);
      const now = Date.now();
      const dt = Math.min(now, end) - last;
      last = now;
      for (const s of streams) {
        const share = (s.rate * dt) / 1000 / s.gateways.length;
        for (let g = 0; g < s.gateways.length; g++) {
          s.credit[g]! += share;
          while (s.credit[g]! >= 1) {
            s.credit[g]! -= 1;
            if (Date.now() >= end) break;
            const r = s.gateways[g]!.check(s.request);
            if (r.allowed) {
              const w = Math.floor(clockRead / W); // the time check() decided at, so the window the gateway counted it in
              s.admitted.set(w, (s.admitted.get(w) ?? 0) + 1);
            } else {
              s.refused++;
              s.reasons.set(r.reason, (s.reasons.get(r.reason) ?? 0) + 1);
            }
          }
        }
      }
      if (now - lastUi > 250) {
        lastUi = now;
        const w = Math.floor(now / W);
        ui.update(`[4/4] overshoot, run ${run + 1}/${sizes.runs}: window ${w - start / W + 1}/${sizes.windowsPerRun}, ${((end - now) / 1000).toFixed(1)} s left; admitted this window: ${streams.map((s) => `${s.admitted.get(w) ?? 0}/${s.limit}`).join(', ')}`);
      }
    }
    // Each window's breach closes when its block lapses at the window's end (aggregator tick).
    const expected = streams.reduce((n, s) => n + [...s.admitted.values()].filter((a) => a >= s.limit).length, 0);
    await until(() => breaches.length >= expected, 10_000, 'the breach records of every window').catch((e: Error) => {
      logger('bench').warn('not every breach record arrived; reporting the counts made at the gateways only', { error: e, expected, got: breaches.length });
    });
  } finally {
    pipeline.aggregator.off('breach', onBreach);
  }
  const samples: OvershootSample[] = [];
  for (const s of streams) {
    for (let w = start / W; w < end / W; w++) {
      const admitted = s.admitted.get(w) ?? 0;
      const b = breaches.find((x) => x.counterKey === s.counterKey && Math.floor(x.firstCrossedAt / W) === w);
      samples.push({ label: s.label, limit: s.limit, window: w, admitted, overshoot: Math.max(0, admitted - s.limit), recorded: b?.overshoot });
    }
  }
  return { samples, reasons: new Map(streams.map((s) => [s.label, s.reasons])) };
}

// ─── main ───────────────────────────────────────────────────────────────────────────────────────

async function main(): Promise<number> {
  const info = runInfo(SELF);
  const values = benchArgs(HELP, { quick: { type: 'boolean' }, runs: { type: 'string' }, out: { type: 'string' } });
  if (typeof values === 'number') return values;
  const sizes: Sizes = { ...(values.quick ? QUICK : FULL) };
  const runs = wholeNumber('--runs', values.runs, 1, 50);
  if (runs === null) return 2;
  if (runs !== undefined) sizes.runs = runs;
  const outFile = resolvePath(values.out ?? join(HERE, 'results', 'gateway.md'));
  configureLogging({ level: (process.env.QUOTAFLOW_LOG as Level | 'silent' | undefined) ?? 'warn', format: 'pretty' });
  stopOnCtrlC();

  const ui = progress();
  ui.update('starting Kafka and Redis (or using KAFKA_BROKERS / REDIS_URL)…');
  const stack = await resolveStack({ env: process.env });
  const runId = randomBytes(3).toString('hex');
  const kafka = createKafka({ brokers: stack.brokers, clientId: `quotaflow-bench-${runId}`, minLogLevel: 'error' });
  const admin = kafka.admin();
  const redis = createRedisClient(stack.redisUrl, { log: logger('bench.redis') });
  const env: Env = { stack, kafka, admin, policy: benchPolicy(sizes), runId, redisPrefix: `bench-${runId}:`, topicsCreated: [], ui, sizes };
  const gateways: Gateway[] = [];
  let pipeline: Pipeline | undefined;
  let baselinePipeline: Pipeline | undefined;
  const stopGateways = async () => {
    await Promise.all(gateways.splice(0).map((g) => g.stop().catch((e) => logger('bench').warn('stopping a gateway failed', { error: e }))));
  };
  const figures: Figure[] = [];
  const report: string[] = [];
  try {
    await admin.connect();
    await whenReady(redis, 10_000, `connect to ${stack.redisUrl}`);
    const rv = stack.redis.version ?? (await redisVersion(redis));

    // ── 1 and 2: checks per second, memory, and the peers, interleaved per run ──
    const s1prefix = `bench-${runId}-checks.`;
    await newTopics(env, s1prefix);
    ui.update('[1/4] starting a gateway (emitter connected to Kafka)…');
    const gw = await startGateway(env, s1prefix, `bench-checks-${runId}`);
    gateways.push(gw);
    const allowedRequests: CheckRequest[] = Array.from({ length: sizes.keys }, (_, i) => ({ api: 'Roomy', subjects: { api_key: `ok-${runId}-${i}` } }));
    const refusedRequests: CheckRequest[] = Array.from({ length: sizes.keys }, (_, i) => ({ api: 'Roomy', subjects: { api_key: `no-${runId}-${i}` } }));
    const now = Date.now();
    for (const req of refusedRequests) gw.cache.apply(blockDecision(resolved(env.policy, req), now, now + 3_600_000), now);
    const timerMs = timerOverheadMs();
    ui.update('[1/4] warming up the JIT…');
    await checkLoop(gw, allowedRequests, sizes.warmupMs, true, ui, '[1/4] warm-up, allowed path');
    await checkLoop(gw, refusedRequests, sizes.warmupMs, false, ui, '[1/4] warm-up, refused path');
    const allowedRuns: CheckRun[] = [];
    const refusedRuns: CheckRun[] = [];
    const memoryRuns: MemoryRun[] = [];
    /** [run][peer][concurrency] */
    const peerRuns: PeerRun[][][] = [];
    for (let r = 0; r < sizes.runs; r++) {
      allowedRuns.push(await checkLoop(gw, allowedRequests, sizes.checkMs, true, ui, `[1/4] run ${r + 1}/${sizes.runs}, allowed path:`));
      refusedRuns.push(await checkLoop(gw, refusedRequests, sizes.checkMs, false, ui, `[1/4] run ${r + 1}/${sizes.runs}, refused path:`));
      ui.update(`[1/4] run ${r + 1}/${sizes.runs}: memory per cached block (${int(sizes.memoryBlocks)} block decisions)…`);
      memoryRuns.push(memoryPerBlock(env.policy, sizes.memoryBlocks, `${runId}-${r}`));
      // Peers take turns at each concurrency, the first one alternating by run, so a drift in the
      // machine's load falls on both.
      const byPeer: PeerRun[][] = PEERS.map(() => []);
      for (const c of sizes.concurrencies) {
        for (let i = 0; i < PEERS.length; i++) {
          checkAbort();
          const p = (i + r) % PEERS.length;
          ui.update(`[2/4] run ${r + 1}/${sizes.runs}: ${PEERS[p]!.name}, ${c} in flight, ${sizes.peerMs / 1000} s…`);
          byPeer[p]!.push(await peerRun(PEERS[p]!, stack.redisUrl, redis, env.redisPrefix, sizes.keys, c, sizes.peerMs));
        }
      }
      peerRuns.push(byPeer);
    }
    await stopGateways();
    const emitterDrops = allowedRuns.concat(refusedRuns).reduce((n, r) => n + r.dropped, 0);

    /** Per peer, per run: the concurrency where it did the most requests/s. */
    const best = PEERS.map((_, p) => peerRuns.map((byPeer) => byPeer[p]!.reduce((a, b) => (b.rate > a.rate ? b : a))));
    const peerRate = PEERS.map((_, p) => median(best[p]!.map((b) => b.rate)));
    /** Ours ÷ a peer's best, within each run. */
    const perRun = (ours: number[], p: number) => ours.map((x, r) => x / best[p]![r]!.rate);
    const times = (n: number) => ratio(n, 1);
    const allowedSustained = allowedRuns.map((r) => r.sustained);
    const refusedSustained = refusedRuns.map((r) => r.sustained);
    const s1 = '1. checks/s, one core';
    // At the lowest concurrency: an unloaded round trip.
    const roundTrip = PEERS.map((_, p) => median(peerRuns.map((byPeer) => byPeer[p]![0]!.p50)));
    const vsRate = (xs: number[]) => PEERS.map((peer, p) => `${times(median(perRun(xs, p)))} ${peer.name}`).join(', ');
    const vsTrip = `Redis round trip p50 ${PEERS.map((peer, p) => `${dur(roundTrip[p]!)} (${peer.name})`).join(', ')} at ${sizes.concurrencies[0]} in flight`;
    const memory = median(memoryRuns.map((m) => m.perBlock));
    const minimal = median(memoryRuns.map((m) => m.minimalPerBlock));
    figures.push(
      { section: s1, name: 'allowed path: checks/s, every event sent to Kafka', values: allowedSustained, fmt: perSec, vs: vsRate(allowedSustained) },
      { section: s1, name: 'allowed path: checks/s inside check() only', values: allowedRuns.map((r) => r.checkOnly), fmt: perSec, vs: vsRate(allowedRuns.map((r) => r.checkOnly)) },
      { section: s1, name: 'allowed path: p50 per check', values: allowedRuns.map((r) => r.p50), fmt: dur, vs: vsTrip },
      { section: s1, name: 'allowed path: p99 per check', values: allowedRuns.map((r) => r.p99), fmt: dur },
      { section: s1, name: 'refused path: checks/s, every event sent to Kafka', values: refusedSustained, fmt: perSec, vs: vsRate(refusedSustained) },
      { section: s1, name: 'refused path: checks/s inside check() only', values: refusedRuns.map((r) => r.checkOnly), fmt: perSec, vs: vsRate(refusedRuns.map((r) => r.checkOnly)) },
      { section: s1, name: 'refused path: p50 per check', values: refusedRuns.map((r) => r.p50), fmt: dur, vs: vsTrip },
      { section: s1, name: 'refused path: p99 per check', values: refusedRuns.map((r) => r.p99), fmt: dur },
      { section: s1, name: 'memory per cached block', values: memoryRuns.map((m) => m.perBlock), fmt: bytes, vs: `${ratio(memory, minimal)} a bare Map<counterKey, until> (${bytes(minimal)})` },
    );
    const s2 = '2. peers';
    const bestConcurrency = PEERS.map((_, p) => median(best[p]!.map((b) => b.concurrency)));
    PEERS.forEach((peer, p) => {
      figures.push(
        {
          section: s2, name: `${peer.name}: requests/s, best concurrency (${bestConcurrency[p]} in flight)`, values: best[p]!.map((b) => b.rate), fmt: perSec,
          vs: `Redis CPU ${(median(best[p]!.map((b) => b.redisCpuUs))).toFixed(1)} µs per request`,
        },
        { section: s2, name: `our check() ÷ ${peer.name}, every event sent to Kafka`, values: perRun(allowedSustained, p), fmt: times, vs: 'allowed path, within each run' },
        { section: s2, name: `our check() ÷ ${peer.name}, inside check() only`, values: perRun(allowedRuns.map((r) => r.checkOnly), p), fmt: times, vs: 'allowed path, within each run' },
      );
    });
    PEERS.forEach((peer, p) => {
      sizes.concurrencies.forEach((c, ci) => {
        const at = peerRuns.map((byPeer) => byPeer[p]![ci]!);
        figures.push({
          section: s2, name: `${peer.name}, ${c} in flight: requests/s`, values: at.map((x) => x.rate), fmt: perSec,
          vs: `p50 ${dur(median(at.map((x) => x.p50)))}, p99 ${dur(median(at.map((x) => x.p99)))} per request`,
        });
      });
    });

    // ── 3: decision latency ──
    checkAbort();
    ui.update('[3/4] starting the aggregator and the gateways…');
    pipeline = await startPipeline(env);
    const dgw: Gateway[] = [];
    for (let g = 0; g < sizes.decisionGateways; g++) {
      ui.update(`[3/4] starting gateway ${g + 1}/${sizes.decisionGateways} (its own decision feed)…`);
      dgw.push(await startGateway(env, pipeline.prefix, `bench-dl-${runId}-${g}`));
      gateways.push(dgw[g]!);
    }
    ui.update('[3/4] probing: one block through the aggregator to every gateway…');
    await probe(env, dgw[0]!, dgw, 'dl');
    const decisionRuns: DecisionRun[] = [];
    for (let run = 0; run < sizes.runs; run++) decisionRuns.push(await decisionRun(env, pipeline, dgw, run));
    await stopGateways();
    const s3 = `3. decision latency, ${sizes.decisionGateways} gateways`;
    figures.push(
      { section: s3, name: 'crossing → block in every cache, p50', values: decisionRuns.map((r) => r.p50), fmt: polled },
      { section: s3, name: 'crossing → block in every cache, p95', values: decisionRuns.map((r) => r.p95), fmt: polled },
      { section: s3, name: 'crossing → block in every cache, p99', values: decisionRuns.map((r) => r.p99), fmt: polled },
      { section: s3, name: 'stage: gateway → Kafka (linger + produce), median', values: decisionRuns.map((r) => r.toKafka), fmt: dur },
      { section: s3, name: 'stage: Kafka → aggregator decision, median', values: decisionRuns.map((r) => r.toDecision), fmt: dur },
      { section: s3, name: 'stage: decision → last gateway cache, median', values: decisionRuns.map((r) => r.toCaches), fmt: polled },
      { section: s3, name: 'first → last gateway to cache it, median', values: decisionRuns.map((r) => r.firstToLast), fmt: polled },
    );

    // ── 4: overshoot ──
    checkAbort();
    const ogw: Gateway[] = [];
    for (let g = 0; g < sizes.overshootGateways; g++) {
      ui.update(`[4/4] starting gateway ${g + 1}/${sizes.overshootGateways}…`);
      ogw.push(await startGateway(env, pipeline.prefix, `bench-os-${runId}-${g}`, observedClock));
      gateways.push(ogw[g]!);
    }
    ui.update('[4/4] probing: one block through the aggregator to every gateway…');
    await probe(env, ogw[0]!, ogw, 'os');
    const overshoot: OvershootSample[] = [];
    const refusedBy = new Map<string, Map<string, number>>();
    for (let run = 0; run < sizes.runs; run++) {
      const o = await overshootRun(env, pipeline, ogw, run);
      overshoot.push(...o.samples);
      for (const [label, reasons] of o.reasons) {
        const into = refusedBy.get(label) ?? refusedBy.set(label, new Map()).get(label)!;
        for (const [reason, n] of reasons) into.set(reason, (into.get(reason) ?? 0) + n);
      }
    }
    await stopGateways();
    // The same runs with near-limit shares off (an aggregator that publishes no near snapshots): the
    // baseline that shows what the shares buy.
    ui.update('[4/4] starting an aggregator with near-limit shares off, and its gateways…');
    baselinePipeline = await startPipeline(env, 0, '-noshare');
    const bgw: Gateway[] = [];
    for (let g = 0; g < sizes.overshootGateways; g++) {
      bgw.push(await startGateway(env, baselinePipeline.prefix, `bench-os0-${runId}-${g}`, observedClock));
      gateways.push(bgw[g]!);
    }
    await probe(env, bgw[0]!, bgw, 'os0');
    for (let run = 0; run < sizes.runs; run++) {
      const o = await overshootRun(env, baselinePipeline, bgw.slice(), run, NO_SHARE);
      overshoot.push(...o.samples.filter((x) => !x.label.startsWith('1 gateway')));
      for (const [label, reasons] of o.reasons) {
        const into = refusedBy.get(label) ?? refusedBy.set(label, new Map()).get(label)!;
        for (const [reason, n] of reasons) into.set(reason, (into.get(reason) ?? 0) + n);
      }
    }
    await stopGateways();
    const s4 = `4. overshoot, ${sizes.loadFactor}x the limit rate`;
    const labels = [...new Set(overshoot.map((s) => s.label))];
    for (const label of labels) {
      const xs = overshoot.filter((s) => s.label === label);
      const limit = xs[0]!.limit;
      const recorded = xs.map((s) => s.recorded).filter((x): x is number => x !== undefined);
      const agree = xs.filter((s) => s.recorded === s.overshoot).length;
      const name = `${label}/${sizes.windowMs / 1000}s (${int((sizes.loadFactor * limit * 1000) / sizes.windowMs)} req/s)`;
      figures.push({
        section: s4, name: `${name}: over the limit per window`,
        values: xs.map((s) => s.overshoot), fmt: (n) => `${count(n)} (${((100 * n) / limit).toFixed(1)}%)`,
        vs: recorded.length
          ? `aggregator's breach records: ${count(median(recorded))} (over the ${recorded.length} of ${xs.length} windows that reached the limit; equal to the gateways' count in ${agree})`
          : xs.every((s) => s.admitted < limit) ? 'no breach record: the count stayed under the limit' : 'aggregator\'s breach records: none arrived',
      });
      const reasons = [...(refusedBy.get(label) ?? new Map<string, number>())].sort((x, y) => y[1] - x[1]).map(([r, n]) => `${r} ${int(n)}`).join(', ');
      figures.push({
        section: s4, name: `${name}: admitted per window`,
        values: xs.map((s) => s.admitted), fmt: (n) => `${count(n)} (${((100 * n) / limit).toFixed(1)}%)`,
        vs: `refused: ${reasons || 'none'}`,
      });
    }

    // ── print and write ──
    ui.done();
    const rows = figures.map((f) => [f.section ?? '', f.name, f.fmt(median(f.values)), spread(f), f.vs ?? '']);
    process.stdout.write(`${table(['section', 'figure', 'median', 'min – max', 'vs baseline / note'], rows)}\n\n`);

    const of = (section: string) => figures.filter((f) => f.section === section);
    const checkOnly = median(allowedRuns.map((r) => r.checkOnly));
    const sustained = median(allowedSustained);
    const waited = median(allowedRuns.map((r) => r.waitedShare));
    const busy = median(allowedRuns.map((r) => r.busyShare));
    const keyLength = memoryRuns[0]!.keyLength;
    const dr = {
      p50: median(decisionRuns.map((r) => r.p50)), toKafka: median(decisionRuns.map((r) => r.toKafka)),
      toDecision: median(decisionRuns.map((r) => r.toDecision)), toCaches: median(decisionRuns.map((r) => r.toCaches)),
    };
    const stages: Array<[string, number]> = [
      ['the gateway → Kafka hop (emitter linger, then a produce with acks=all)', dr.toKafka],
      ['the aggregator (fetch of the usage batch, Redis load, fold, publish)', dr.toDecision],
      ['the decision → gateway hop (produce with acks=all, then each feed\'s fetch)', dr.toCaches],
    ];
    const dominant = stages.reduce((x, y) => (y[1] > x[1] ? y : x));
    const tail = [0, 1, 2].map((i) => median(decisionRuns.map((r) => r.tail[i]!)));
    const tailIndex = tail.indexOf(Math.max(...tail));
    const rateOf = (limit: number) => (sizes.loadFactor * limit * 1000) / sizes.windowMs;
    const overOf = (limit: number) => median(overshoot.filter((s) => s.limit === limit && !s.label.startsWith('1 ')).map((s) => s.overshoot));
    const solo = overshoot.filter((s) => s.label.startsWith('1 gateway'));
    const withShares = (limit: number) => median(overshoot.filter((x) => x.limit === limit && !x.label.startsWith('1 ') && !x.label.endsWith(NO_SHARE)).map((x) => x.overshoot));
    const withoutShares = (limit: number) => median(overshoot.filter((x) => x.limit === limit && x.label.endsWith(NO_SHARE)).map((x) => x.overshoot));
    const shareRefusals = [...refusedBy].filter(([label]) => !label.startsWith('1 ')).flatMap(([, m]) => [...m]).filter(([r]) => r !== 'blocked' && r !== 'local-limit');
    const dominates4 = sizes.overshootLimits.map((l) => {
      const label = labels.find((x) => !x.startsWith('1 ') && overshoot.some((s) => s.label === x && s.limit === l))!;
      const admitted = median(overshoot.filter((s) => s.label === label).map((s) => s.admitted));
      const early = [...(refusedBy.get(label) ?? new Map<string, number>())].filter(([r]) => r !== 'blocked' && r !== 'local-limit').reduce((n, [, c]) => n + c, 0);
      const over = overOf(l);
      if (over === 0 && early > 0) return `at limit ${l} the gateways' own shares of a near-limit snapshot stopped them at ${count(admitted)} before a block was needed`;
      return `at limit ${l}, ${int(rateOf(l))} req/s × ${dur(dr.p50)} (section 3's p50, on a quiet pipeline) ≈ ${(rateOf(l) * dr.p50 / 1000).toFixed(1)} expected, ${count(over)} measured — as if the block took ${dur((over / rateOf(l)) * 1000)} to reach every gateway under this load`;
    }).join('; ');

    const cores = os.cpus().length;
    const peersFaster = PEERS.map((peer, p) => {
      const cpuUs = median(best[p]!.map((b) => b.redisCpuUs));
      const core = (cpuUs * peerRate[p]!) / 1e6;
      return `${peer.name} peaks at ${bestConcurrency[p]} in flight, where Redis spent ${cpuUs.toFixed(1)} µs of CPU per request (${(core * 100).toFixed(0)}% of a core at ${perSec(peerRate[p]!)}: ${core > 0.8 ? 'Redis itself is close to its limit' : 'the client (Node, in this process) and the round trip bound it, with Redis and the broker on the same ' + cores + ' cores'})`;
    }).join('; ');

    // Main-thread time per event spent sending it: the busy time per check beyond check() itself.
    const sendUs = ((busy * 1e6) / sustained) - 1e6 / checkOnly;
    const faster1 = sustained < checkOnly * 0.7
      ? busy > 0.8
        ? `sending bounds it: check() alone does ${perSec(checkOnly)} (${dur(1000 / checkOnly)} each on average), but with the emitter on the same core the event loop was busy ${(busy * 100).toFixed(0)}% of the run and events reach Kafka at ${perSec(sustained)} — about ${dur(sendUs / 1000)} of main-thread work per event sent (JSON.stringify, then kafkajs's per-record partitioning and encoding), so fewer, larger Kafka records (several usage events per record, or coalescing repeated keys) would raise it before any change to check()`
        : `sending bounds it and the process waits rather than computes: check() alone does ${perSec(checkOnly)}, events reach Kafka at ${perSec(sustained)}, and the event loop was busy only ${(busy * 100).toFixed(0)}% of the run — one 2,000-event produce (gzip, acks=all) in flight at a time, so larger batches or more sends in flight would raise it before any change to check()`
      : `check() itself bounds it (${perSec(checkOnly)} in check(), ${perSec(sustained)} with sending); fewer allocations per check (the headers object, the subjects of each usage event, a second local count for the headers) would raise it`;
    const smaller1 = memory < minimal * 1.3
      ? `a cached block (${bytes(memory)}) costs about what a bare Map<counterKey, until> does (${bytes(minimal)}): the ${keyLength}-character counter key and the Map entry dominate, so a shorter key (e.g. a 64-bit hash of it) is what would make it smaller`
      : `a cached block costs ${bytes(memory)} against ${bytes(minimal)} for a bare Map<counterKey, until>: keeping only the key, until and windowMs (rule and window strings shared) would bring it near that`;

    report.push(
      '# Gateway benchmark',
      '',
      `${generatedLine(info)} Every figure is the median of ${sizes.runs} run(s)${sizes.runs > 1 ? ' with min – max over the runs' : ' (one run: no spread; the default is 3 runs)'}; overshoot pools every window of every run. Each baseline is measured in the same run, on the same machine and services.`,
      '',
      machineLine(info, { stack, redisVersion: rv }),
      '',
      '## 1. Checks per second on one core',
      '',
      `One Gateway on the real policy path (resolve, decision cache, local counts, admitted headers or the refusal body), over ${int(sizes.keys)} API keys, each check queuing its usage event; the gateway's emitter sends them to the real Kafka (batches of up to 2,000, gzip, acks=all) on the same event loop, between chunks of 512 checks (gzip itself runs on libuv's thread pool). ` +
        `"every event sent to Kafka" counts until the last event is acknowledged; when more than 40,000 events wait, the loop waits for the emitter (${(waited * 100).toFixed(0)}% of the allowed-path run; ${int(emitterDrops)} events dropped). ` +
        `"inside check() only" counts the time in the loop alone. p50/p99 are per check, between consecutive timestamps (the timer costs ≈ ${dur(timerMs)}). ` +
        `Refused path: ${int(sizes.keys)} other keys, each with a live block in the cache. Memory: heap growth after folding ${int(sizes.memoryBlocks)} block decisions, parsed from JSON as the feed does, into a DecisionCache, per block, beside the same keys in a bare Map<counterKey, until> (the least a cache could hold).`,
      '',
      ...mdTable(of(s1)),
      '',
      `What would make it faster/smaller: ${faster1}; ${smaller1}.`,
      '',
      '## 2. Peers',
      '',
      'Two limiters that ask Redis on every request, on the same Redis, each from this process over one new ioredis connection, over the same ' +
        `${int(sizes.keys)} keys, all requests allowed (limits far out of reach, so each measures its admit path, as section 1's allowed path does): ` +
        `${PEERS.map((peer) => `**${peer.name}**, ${peer.does}`).join('; ')}. ` +
        `Each runs with ${sizes.concurrencies.join(', ')} requests in flight for ${sizes.peerMs / 1000} s at each, the two taking turns at each concurrency (which goes first alternates by run), in the same run as section 1; the best concurrency of each run is its figure. ` +
        '"our check() ÷ peer" divides section 1\'s allowed-path checks/s by the peer\'s best in the same run, then takes the median over the runs. Redis CPU is INFO used_cpu_user + used_cpu_sys around each peer\'s run. ' +
        'Ours needs no network per check, so its figure is bounded by CPU and by shipping usage events; the peers\' are bounded by Redis round trips.',
      '',
      ...mdTable(of(s2)),
      '',
      `Ratio: the gateway does ${PEERS.map((peer, p) => `${times(median(perRun(allowedSustained, p)))} ${peer.name}'s requests/s with every usage event sent to Kafka and ${times(median(perRun(allowedRuns.map((r) => r.checkOnly), p)))} counting check() alone`).join('; ')}; ` +
        `a check takes ${dur(median(allowedRuns.map((r) => r.p50)))} at p50 where the peers wait ${PEERS.map((peer, p) => `${dur(roundTrip[p]!)} (${peer.name})`).join(' and ')} for an unloaded round trip.`,
      '',
      `What would make them faster: ${peersFaster}; more connections and a client on its own host would raise them, but each request still waits a round trip — the one the gateway does not make.`,
      '',
      `## 3. Decision latency (${sizes.decisionGateways} gateways, one aggregator)`,
      '',
      `A gateway makes the check that reaches a limit (3 per 60 s: the 3rd check is the crossing); the clock starts when that check returns and stops when every one of ${sizes.decisionGateways} Gateway instances (each with its own decision feed, its own consumer group) has the block in its cache, polled every 1 ms (so "< 1 ms" is below what the poll can tell). ` +
        `${sizes.decisionSamples} crossings per run, each on a new key, one every ${sizes.decisionEveryMs} ms; one in-process Aggregator on the real Redis; default settings (emitter linger 10 ms, kafkajs fetch defaults). ` +
        'Stages: until Kafka acknowledges the usage batch holding the crossing; until the aggregator emits the block; until the last gateway caches it.',
      '',
      ...mdTable(of(s3)),
      '',
      `What dominates: ${dominant[0]}, ${dur(dominant[1])} of the ${dur(dr.p50)} median (gateway → Kafka ${dur(dr.toKafka)}, aggregator ${dur(dr.toDecision)}, decision → caches ${dur(dr.toCaches)}); ` +
        `in the slowest 5% it is ${stages[tailIndex]![0].replace(/ \(.*\)$/, '')} (${dur(tail[0]!)}, ${dur(tail[1]!)}, ${dur(tail[2]!)} for the three stages).`,
      '',
      `What would make it faster: ${dominant === stages[0]
        ? 'a shorter emitter linger, or sending at once an event that takes a key near its limit (the gateway knows its own count), and acks=1 for usage events'
        : dominant === stages[1]
          ? 'a shorter fetch wait and smaller batches on the aggregator\'s consumer, and publishing decisions before the Redis write'
          : 'a shorter fetch wait (maxWaitTimeInMs) on the gateways\' decision feeds, and acks=1 for decisions'}.`,
      '',
      `## 4. Overshoot (${sizes.overshootGateways} gateways, ${sizes.loadFactor}x the limit rate at one key)`,
      '',
      `${sizes.overshootGateways} Gateway instances share one key's traffic equally, together ${sizes.loadFactor}x the limit rate, for ${sizes.windowsPerRun} whole fixed windows of ${sizes.windowMs / 1000} s per run (a new key each run), with the aggregator and Redis of section 3. ` +
        'Overshoot = requests admitted in a window minus the limit, counted at the gateways from every check result (by the window of its time); the aggregator\'s closed breach records (quota.audit, `overshoot`) for the same windows are shown beside it as a cross-check. ' +
        `"1 gateway" sends the same rate through one gateway, whose own count refuses at the limit. An Envoy-style counter would show ~0 overshoot here, at the cost of a Redis round trip per request (section 2); only ours is reported.`,
      '',
      ...mdTable(of(s4)),
      '',
      `What dominates: the requests admitted while the block travels to the gateways (offered rate × decision latency): ${dominates4}; with one gateway, its own count keeps it at ${count(median(solo.map((x) => x.overshoot)))}.`,
      '',
      `Near-limit shares, same run: ${sizes.overshootLimits.map((l) => `limit ${l}: ${count(withShares(l))} over per window with them, ${count(withoutShares(l))} without`).join('; ')} (median; the "${NO_SHARE.trim()}" rows use an aggregator that publishes no near snapshots).`,
      '',
      `What would make it smaller: a shorter decision path (section 3, where ${dominant[0].replace(/ \(.*\)$/, '')} took the most)${shareRefusals.length ? '' : ', or each gateway spending only its share of the room left once a key nears its limit'}.`,
      '',
    );
    const shown = writeReport(outFile, report);
    process.stdout.write(`Wrote ${shown} (${elapsedS(info).toFixed(0)} s).\n`);
    return 0;
  } finally {
    ui.update('stopping the gateways, the aggregator and the services…');
    await stopGateways();
    for (const p of [pipeline, baselinePipeline]) {
      if (!p) continue;
      await p.aggregator.stop().catch((e) => logger('bench').warn('stopping the aggregator failed', { error: e }));
      await p.store.close().catch(() => {});
    }
    if (stack.redis.source === 'external') await cleanRedis(redis, env.redisPrefix).catch((e) => logger('bench').warn('removing the benchmark\'s Redis keys failed', { error: e }));
    redis.disconnect();
    if (stack.kafka.source === 'external' && env.topicsCreated.length) {
      await admin.deleteTopics({ topics: env.topicsCreated }).catch((e) => logger('bench').warn('deleting the benchmark\'s topics failed', { error: e }));
    }
    await admin.disconnect().catch(() => {});
    await stack.stop();
    ui.done();
    if (sink === 42) process.stderr.write('\n');
  }
}

runMain('gateway', main);
