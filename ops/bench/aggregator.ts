/**
 * Aggregator benchmark on real services: one Aggregator draining a backlog of usage events from
 * Kafka into Redis, against a bare kafkajs consumer draining the same backlog in the same run, and
 * `quotaflow replay` (--dry-run and --rebuild) reading that backlog again; then
 * its memory per counter at 100,000 and 1,000,000 counters. Each drain runs in a fresh child process
 * (its own heap, RSS and JIT), with a fresh consumer group (and, for the aggregator, a fresh Redis
 * key prefix, so it starts empty). Writes ops/bench/results/aggregator.md.
 * Run: npx tsx ops/bench/aggregator.ts [--quick]
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants as perfConstants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { CompressionTypes, type Consumer, type Kafka, type Message } from 'kafkajs';
import { Aggregator, counterTtlMs } from '../../src/aggregator/aggregator.ts';
import { replayUsage, writeFold } from '../../src/replay/index.ts';
import { decodeUsageEvent } from '../../src/aggregator/decode.ts';
import type { UsageStore } from '../../src/aggregator/ports.ts';
import { progress, table, type Progress } from '../../src/cli/ui.ts';
import type { UsageEvent } from '../../src/events/index.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { ensureTopics, topicNames, topicSpecs } from '../../src/kafka/topics.ts';
import { configureLogging, logger, type Level } from '../../src/log.ts';
import { compilePolicy, parsePolicyText, resolve, type CompiledPolicy } from '../../src/policy/index.ts';
import { resolveStack } from '../../src/stack/index.ts';
import { createRedisClient, openUsageStore } from '../../src/store/index.ts';
import { whenReady } from '../../src/store/client.ts';
import { CounterState, type DecisionContext, type Effects } from '../../src/aggregator/counter-state.ts';
import { CounterLayout, RollingCounter, windowSpec } from '../../src/windows/index.ts';
import {
  benchArgs, bytes, checkAbort, cleanRedis, collect, elapsedS, generatedLine, int, LOGS_HELP, machineLine, mdTable, median, mib, perSec, ratio as ratioOf, redisVersion, ROOT,
  runInfo, runMain, SERVICES_HELP, sleep, spread, stopOnCtrlC, wholeNumber, writeReport, type Figure,
} from './common.ts';

const SELF = fileURLToPath(import.meta.url);
const HERE = dirname(SELF);

const HELP = `Usage: npx tsx ops/bench/aggregator.ts [--quick] [--runs N] [--events N] [--keys N] [--counters LIST] [--drain-up-to N]
                                        [--out FILE] [--no-cpu-prof]

Benchmarks the aggregator on real services and writes a markdown report:
  setup     produces a backlog of usage events (default 1,000,000 over 10,000 API keys, 6 partitions,
            event times over the last minute; about 1% of them on a few hot keys that cross a limit);
  baseline  a bare kafkajs consumer (same fetch settings as the Aggregator) that only counts the
            messages and resolves offsets, draining the whole backlog: events/s;
  ours      one Aggregator on the real Redis draining the same backlog until every event is committed:
            events/s, Redis round trips per batch, events per batch, CPU per event, heap and RSS
            growth per counter, Redis memory and CPU per counter and event;
  replay    \`quotaflow replay\` over the same backlog after each run's drains: --dry-run (the fold
            alone) and --rebuild (the fold, then the write into an empty Redis prefix): events/s;
  memory    per counter at each size of --counters (default 100,000 and 1,000,000): an Aggregator
            draining one event for each of N new keys (sizes up to --drain-up-to, default
            100,000; heap, ArrayBuffers and RSS, what its counters hold, Redis memory), and the same
            N counters built alone as the aggregator builds them (every size), each in a fresh
            child process.
Each run drains the backlog again with fresh consumer groups and a fresh Redis key prefix, each
drain in its own child process; figures are medians over the runs with min–max, and the ratio
ours/baseline is taken within each run. Producing a backlog is not measured.

${SERVICES_HELP}

After the measured runs, one more aggregator drain runs under the V8 profiler (not counted in the
figures) to show where its CPU goes; its .cpuprofile is kept in a temporary directory it prints.

Options:
  --quick        one run, 100,000 events over 2,000 keys, memory at 100,000 counters only
                 (under a minute on 2 quiet cores)
  --runs N       runs (default 3; 1 with --quick)
  --events N     events in the backlog (default 1,000,000; 100,000 with --quick)
  --keys N       API keys the events are spread over (default 10,000; 2,000 with --quick)
  --counters L   memory section sizes, e.g. 100000,1000000 (default; 100000 with --quick), 0 for none
  --drain-up-to N  the largest memory size drained through a real Aggregator (default 100,000;
                 1,000,000 takes a few more minutes on 2 cores); larger ones are built alone only
  --out FILE     where to write the report (default ops/bench/results/aggregator.md)
  --no-cpu-prof  skip the profiled drain
  -h, --help     this text

${LOGS_HELP}
`;

// ─── sizes and the backlog's shape ──────────────────────────────────────────────────────────────

interface Sizes {
  runs: number;
  events: number;
  keys: number;
  /** Memory section: how many counters an aggregator holds, one size after the other. */
  memoryCounters: number[];
  /** Memory section: runs per size drained through an Aggregator, and per larger size (built alone only). */
  memoryRuns: number;
  aloneRuns: number;
  /** Memory section: the largest size drained through a real Aggregator; larger ones are built alone only. */
  drainUpTo: number;
}

const FULL: Sizes = { runs: 3, events: 1_000_000, keys: 10_000, memoryCounters: [100_000, 1_000_000], memoryRuns: 2, aloneRuns: 1, drainUpTo: 100_000 };
const QUICK: Sizes = { runs: 1, events: 100_000, keys: 2_000, memoryCounters: [100_000], memoryRuns: 1, aloneRuns: 1, drainUpTo: 100_000 };

const USAGE_PARTITIONS = 6;
/** The Aggregator's own defaults (src/aggregator/aggregator.ts), which the baseline consumer copies. */
const PARTITIONS_CONCURRENTLY = 3;
const CONSUMER_SETTINGS = { sessionTimeout: 30_000, heartbeatInterval: 3_000, maxBytesPerPartition: 4 * 1024 * 1024 };
/** One event in HOT_EVERY goes to a hot key (a prime, so the hot events do not line up with the key rotation). */
const HOT_EVERY = 97;
/** Event times span this much, ending when production starts: none is late, none in the future. */
const SPREAD_MS = 60_000;
const GATEWAYS = 4;
const PRODUCE_BATCH = 10_000;
const PRODUCE_IN_FLIGHT = 4;
const DRAIN_TIMEOUT_MS = 15 * 60_000;
const MICRO_SAMPLE = 20_000;

interface Shape {
  hotKeys: number;
  /** Admitted events per ordinary key in the minute, and per hot key. */
  perKey: number;
  perHotKey: number;
  minuteLimit: number;
  hourLimit: number;
}

/** Limits well above an ordinary key's minute of traffic, and below a hot key's: only hot keys block. */
function shapeOf(sizes: Sizes): Shape {
  const hotKeys = Math.max(1, Math.round(sizes.keys / 1_000));
  const perKey = (sizes.events * (1 - 1 / HOT_EVERY)) / sizes.keys;
  const perHotKey = sizes.events / HOT_EVERY / hotKeys;
  const minuteLimit = Math.max(500, Math.ceil((5 * perKey) / 100) * 100);
  return { hotKeys, perKey, perHotKey, minuteLimit, hourLimit: 10 * minuteLimit };
}

function policyText(shape: Shape): string {
  return `
version: "bench"
product: quotaflow aggregator benchmark
identity:
  api_key: { header: X-API-Key }
tenant: api_key
refusal:
  status: 429
  body: json_error
  error_code: RATE_LIMITED
  message: Rate limit exceeded. Try again in {retry_after} seconds.
  headers: [retry-after, x-ratelimit]
rules:
  - id: per-key
    default: true
    scope: api_key
    limits:
      - { limit: ${shape.minuteLimit}, window: 60s }
      - { limit: ${shape.hourLimit}, window: 1h }
`;
}

const keyName = (runId: string, k: number) => `bench-${runId}-key-${k}`;

/** The k-th event of a memory backlog of n keys: one admitted event per key, so n counters. */
function memoryEvent(runId: string, n: number, k: number, start: number): UsageEvent {
  return {
    schemaVersion: 1,
    eventTime: start - SPREAD_MS + Math.floor((k * SPREAD_MS) / n),
    region: 'bench',
    gatewayId: `gw-${k % GATEWAYS}`,
    subjects: { api_key: `bench-${runId}-m${n}-${k}` },
    api: null,
    cost: 1,
    outcome: { kind: 'admitted' },
    policyVersion: 'bench',
  };
}

/** The i-th event of the backlog, as a gateway would emit it (api null: the default rule). */
function usageEvent(runId: string, i: number, sizes: Sizes, shape: Shape, start: number): UsageEvent {
  const k = i % HOT_EVERY === 0 ? Math.floor(i / HOT_EVERY) % shape.hotKeys : i % sizes.keys;
  return {
    schemaVersion: 1,
    eventTime: start - SPREAD_MS + Math.floor((i * SPREAD_MS) / sizes.events),
    region: 'bench',
    gatewayId: `gw-${i % GATEWAYS}`,
    subjects: { api_key: keyName(runId, k) },
    api: null,
    cost: 1,
    outcome: { kind: 'admitted' },
    policyVersion: 'bench',
  };
}

// ─── small helpers ──────────────────────────────────────────────────────────────────────────────

/** A replay's events/s, from its start (planning and the consumer's group join included) to the end of its fold and write. */
const replayEps = (r: ReplayBench) => (r.events * 1000) / (r.foldMs + r.writeMs);

const fixed = (digits: number) => (n: number) => n.toFixed(digits);
const us = (n: number) => `${n.toFixed(n < 10 ? 2 : 1)} µs`;
const ms = (n: number) => `${n.toFixed(n < 10 ? 2 : 1)} ms`;
/** Two decimals below 10×: the aggregator's ratios to the bare consumer are well under 1. */
const ratio = (a: number, b: number) => ratioOf(a, b, 2);

// ─── the drains, each in a child process ────────────────────────────────────────────────────────

interface BaselineTask {
  role: 'baseline';
  brokers: string[];
  topic: string;
  groupId: string;
  expected: number;
  logLevel: Level | 'silent';
}

interface AggregatorTask {
  role: 'aggregator';
  brokers: string[];
  redisUrl: string;
  keyPrefix: string;
  topicPrefix: string;
  groupId: string;
  expected: number;
  policyText: string;
  logLevel: Level | 'silent';
}

/** Builds `n` counters in the child's own heap, without Kafka or Redis (see counterBytes). */
interface CountersTask {
  role: 'counters';
  n: number;
  /** Also measure n bare RollingCounters. */
  withRings: boolean;
  runId: string;
  policyText: string;
  logLevel: Level | 'silent';
}

/** `quotaflow replay` over the same backlog: the fold alone (--dry-run), or the fold then the write into an empty Redis prefix (--rebuild). */
interface ReplayTask {
  role: 'replay';
  mode: 'dry-run' | 'rebuild';
  brokers: string[];
  redisUrl: string;
  keyPrefix: string;
  topicPrefix: string;
  expected: number;
  policyText: string;
  logLevel: Level | 'silent';
}

interface ReplayBench {
  events: number;
  /** From the start of the replay (plan, consumer join included) to the end of the fold, and of the write. */
  foldMs: number;
  writeMs: number;
  counters: number;
  cpuMs: number;
}

type Task = BaselineTask | AggregatorTask | CountersTask | ReplayTask;

interface AggregatorFigures {
  batches: number;
  storeRoundTrips: number;
  loads: number;
  applies: number;
  /** Meta-only writes (the lapse timer's: fence unchanged, no increments), not tied to a batch. */
  metaWrites: number;
  loadMs: number;
  applyMs: number;
  counted: number;
  decisions: number;
  breachRecords: number;
  late: number;
  dlq: number;
  conflicts: number;
  skippedBelowFence: number;
  storeFailures: number;
  /** Events decoded, including batches not (yet) committed. */
  consumed: number;
  crashes: number;
}

interface DrainResult {
  /** Messages drained (baseline) or committed (aggregator). */
  events: number;
  /** First batch handed to the code → the last event counted / committed. */
  ms: number;
  batches: number;
  /** CPU time of the process over the same interval (user + system). */
  cpuMs: number;
  /** Process memory before the consumer starts and after the drain (both after two GCs). */
  before: Memory;
  after: Memory;
  /** Heap + ArrayBuffers freed when the stopped Aggregator's per-partition state (counters, tenants) is dropped. */
  retained?: number;
  /** process.hrtime of the interval, µs (matches a V8 CPU profile's clock). */
  fromUs: number;
  toUs: number;
  agg?: AggregatorFigures;
}

type ChildResult = DrainResult | CounterBytes | ReplayBench;
type ChildMessage = { type: 'progress'; done: number; ms: number } | { type: 'result'; result: ChildResult } | { type: 'error'; message: string };

const hrUs = () => Number(process.hrtime.bigint() / 1000n);

interface Memory {
  heap: number;
  /** ArrayBuffer backing stores (the counters' Float64Array rings, Kafka's Buffers): outside the heap. */
  arrayBuffers: number;
  rss: number;
}

function memory(): Memory {
  collect();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, arrayBuffers: m.arrayBuffers, rss: m.rss };
}

/** Resolves with the interval's end once `done` is called; rejects on abort or timeout. */
function finishLine(signal: AbortSignal, timeoutMs: number, what: string) {
  let resolveDone!: () => void;
  let rejectDone!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  const timer = setTimeout(() => rejectDone(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`)), timeoutMs);
  signal.addEventListener('abort', () => rejectDone(new Error('stopped')), { once: true });
  void promise.finally(() => clearTimeout(timer)).catch(() => {});
  return { promise, done: resolveDone, fail: rejectDone };
}

/** Marks the first batch handed to user code, on the consumer of `groupId` that `kafka` creates. */
function withFirstBatchHook(kafka: Kafka, groupId: string, onBatch: () => void): Kafka {
  const hooked = Object.create(kafka) as Kafka;
  hooked.consumer = (config) => {
    const consumer: Consumer = kafka.consumer(config);
    if (config?.groupId === groupId) consumer.on(consumer.events.START_BATCH_PROCESS, onBatch);
    return consumer;
  };
  return hooked;
}

/** The aggregator's store port, timing each round trip (serialization, network, the Lua script). */
function timedStore(inner: UsageStore) {
  const t = { loads: 0, applies: 0, loadMs: 0, applyMs: 0, metaWrites: 0 };
  const store: UsageStore = {
    async load(partition, tenants) {
      const s = performance.now();
      try {
        return await inner.load(partition, tenants);
      } finally {
        t.loads++;
        t.loadMs += performance.now() - s;
      }
    },
    async apply(partition, writes, ttlMs) {
      if (writes.every((w) => w.newFence === w.expectedFence && w.counters.every((c) => c.increments.length === 0))) {
        t.metaWrites++;
        return inner.apply(partition, writes, ttlMs);
      }
      const s = performance.now();
      try {
        return await inner.apply(partition, writes, ttlMs);
      } finally {
        t.applies++;
        t.applyMs += performance.now() - s;
      }
    },
  };
  return { store, timings: t };
}

function reportProgress(done: () => number, from: () => number | undefined): NodeJS.Timeout {
  const timer = setInterval(() => {
    const f = from();
    process.send?.({ type: 'progress', done: done(), ms: f === undefined ? 0 : performance.now() - f } satisfies ChildMessage);
  }, 250);
  timer.unref();
  return timer;
}

async function drainBaseline(task: BaselineTask, signal: AbortSignal): Promise<DrainResult> {
  const kafka = createKafka({ brokers: task.brokers, clientId: 'quotaflow-bench-baseline', minLogLevel: 'error' });
  const before = memory();
  const consumer = kafka.consumer({ groupId: task.groupId, ...CONSUMER_SETTINGS });
  let firstAt: number | undefined;
  let fromUs = 0;
  let cpu0 = process.cpuUsage();
  consumer.on(consumer.events.START_BATCH_PROCESS, () => {
    if (firstAt !== undefined) return;
    firstAt = performance.now();
    fromUs = hrUs();
    cpu0 = process.cpuUsage();
  });
  let count = 0;
  let batches = 0;
  let lastAt = 0;
  const finish = finishLine(signal, DRAIN_TIMEOUT_MS, `the bare consumer to drain ${task.expected} events (it has ${count})`);
  const progressTimer = reportProgress(() => count, () => firstAt);
  try {
    await consumer.connect();
    await consumer.subscribe({ topic: task.topic, fromBeginning: true });
    await consumer.run({
      partitionsConsumedConcurrently: PARTITIONS_CONCURRENTLY,
      eachBatch: async ({ batch, resolveOffset }) => {
        count += batch.messages.length;
        batches++;
        resolveOffset(batch.lastOffset());
        if (count >= task.expected && lastAt === 0) {
          lastAt = performance.now();
          finish.done();
        }
      },
    });
    await finish.promise;
    const cpu = process.cpuUsage(cpu0);
    const toUs = hrUs();
    const after = memory();
    return {
      events: count, ms: lastAt - firstAt!, batches, cpuMs: (cpu.user + cpu.system) / 1000, before, after, fromUs, toUs,
    };
  } finally {
    clearInterval(progressTimer);
    await consumer.disconnect().catch(() => {});
  }
}

async function drainAggregator(task: AggregatorTask, signal: AbortSignal): Promise<DrainResult> {
  const kafka = createKafka({ brokers: task.brokers, clientId: 'quotaflow-bench-aggregator', minLogLevel: 'error' });
  const policy = compilePolicy(parsePolicyText(task.policyText, 'aggregator-bench.yaml'));
  const redis = await openUsageStore(task.redisUrl, { keyPrefix: task.keyPrefix });
  const { store, timings } = timedStore(redis);
  let firstAt: number | undefined;
  let fromUs = 0;
  let cpu0 = process.cpuUsage();
  const hooked = withFirstBatchHook(kafka, task.groupId, () => {
    if (firstAt !== undefined) return;
    firstAt = performance.now();
    fromUs = hrUs();
    cpu0 = process.cpuUsage();
  });
  const before = memory();
  let aggregator: Aggregator | undefined = new Aggregator({
    kafka: hooked, store, policy, topics: topicNames(task.topicPrefix), groupId: task.groupId, region: 'bench',
    partitionsConsumedConcurrently: PARTITIONS_CONCURRENTLY, log: logger('aggregator'),
  });
  const { stats } = aggregator;
  let lastAt = 0;
  let crashes = 0;
  let stopped = false;
  let closed = false;
  const finish = finishLine(signal, DRAIN_TIMEOUT_MS, `the aggregator to commit ${task.expected} events (it has ${stats.committed})`);
  aggregator.on('batch', () => {
    if (stats.committed >= task.expected && lastAt === 0) {
      lastAt = performance.now();
      finish.done();
    }
  });
  aggregator.on('crash', () => crashes++);
  aggregator.on('fatal', (e: unknown) => finish.fail(new Error(`the aggregator stopped: ${e instanceof Error ? e.message : String(e)}`)));
  const progressTimer = reportProgress(() => stats.committed, () => firstAt);
  try {
    await aggregator.start();
    await finish.promise;
    const cpu = process.cpuUsage(cpu0);
    const toUs = hrUs();
    const after = memory();
    const committed = stats.committed;
    const agg: AggregatorFigures = {
      batches: stats.batches, storeRoundTrips: stats.storeRoundTrips, loads: timings.loads, applies: timings.applies, metaWrites: timings.metaWrites, loadMs: timings.loadMs,
      applyMs: timings.applyMs, counted: stats.counted, decisions: stats.decisions, breachRecords: stats.breachRecords, late: stats.late,
      dlq: stats.dlq, conflicts: stats.conflicts, skippedBelowFence: stats.skippedBelowFence,
      storeFailures: stats.storeFailures, consumed: stats.events, crashes,
    };
    // What its counters and tenants hold at the end: stop it, then free its per-partition state
    // (a private field, read here only) and compare; without that field, drop the whole Aggregator
    // (which then also counts what kafkajs keeps after disconnecting).
    await aggregator.stop();
    stopped = true;
    await redis.close();
    closed = true;
    const held = memory();
    const partitions = (aggregator as unknown as { partitions?: unknown }).partitions;
    if (partitions instanceof Map) partitions.clear();
    else {
      aggregator.removeAllListeners();
      aggregator = undefined;
    }
    const dropped = memory();
    return {
      events: committed, ms: lastAt - firstAt!, batches: agg.batches, cpuMs: (cpu.user + cpu.system) / 1000,
      before, after, retained: held.heap + held.arrayBuffers - (dropped.heap + dropped.arrayBuffers), fromUs, toUs, agg,
    };
  } finally {
    clearInterval(progressTimer);
    if (aggregator && !stopped) await aggregator.stop().catch((e) => logger('bench').warn('stopping the aggregator failed', { error: e }));
    if (!closed) await redis.close().catch(() => {});
  }
}

async function runReplay(task: ReplayTask, signal: AbortSignal): Promise<ReplayBench> {
  const kafka = createKafka({ brokers: task.brokers, clientId: 'quotaflow-bench-replay', minLogLevel: 'error' });
  const policy = compilePolicy(parsePolicyText(task.policyText, 'aggregator-bench.yaml'));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const run = await replayUsage({
    kafka, topics: topicNames(task.topicPrefix), policy, from: { kind: 'earliest' }, signal,
    onProgress: (p) => process.send?.({ type: 'progress', done: p.read, ms: p.elapsedMs } satisfies ChildMessage),
  });
  if (run.aborted) throw new Error('stopped');
  const foldMs = performance.now() - t0;
  if (run.fold.stats.counted !== task.expected) throw new Error(`the replay counted ${run.fold.stats.counted} of ${task.expected} events`);
  let writeMs = 0;
  if (task.mode === 'rebuild') {
    const store = await openUsageStore(task.redisUrl, { keyPrefix: task.keyPrefix });
    try {
      const w0 = performance.now();
      const written = await writeFold(run.fold, store, counterTtlMs(policy), { signal });
      writeMs = performance.now() - w0;
      if (written.written !== written.tenants) throw new Error(`the rebuild wrote ${written.written} of ${written.tenants} tenants (${written.present.length} already there)`);
    } finally {
      await store.close();
    }
  }
  const cpu = process.cpuUsage(cpu0);
  return { events: run.read, foldMs, writeMs, counters: run.fold.counters, cpuMs: (cpu.user + cpu.system) / 1000 };
}

/** The child side: one task from the parent, its result back, then exit. */
async function child(): Promise<void> {
  const task = await new Promise<Task>((r) => process.once('message', (m) => r(m as Task)));
  configureLogging({ level: task.logLevel, format: 'pretty' });
  const abort = new AbortController();
  // A drain stops its consumer on a signal; building counters (one synchronous loop) holds nothing
  // to clean up, so there a signal ends the process at once.
  if (task.role !== 'counters') for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => abort.abort());
  process.once('disconnect', () => (task.role === 'counters' ? process.exit(1) : abort.abort()));
  let message: ChildMessage;
  try {
    const result = task.role === 'baseline'
      ? await drainBaseline(task, abort.signal)
      : task.role === 'aggregator'
        ? await drainAggregator(task, abort.signal)
        : task.role === 'replay'
          ? await runReplay(task, abort.signal)
          : await counterBytes(compilePolicy(parsePolicyText(task.policyText, 'aggregator-bench.yaml')), task.n, task.runId, task.withRings);
    message = { type: 'result', result };
  } catch (e) {
    message = { type: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) };
  }
  if (process.connected) await new Promise<void>((r) => process.send!(message, () => r()));
  process.exit(message.type === 'result' ? 0 : 1);
}

// ─── the parent side ────────────────────────────────────────────────────────────────────────────

let running: ChildProcess | undefined;

interface ChildOptions {
  /** Run it under the V8 profiler, writing its .cpuprofile here. */
  cpuProfDir?: string;
  /** A larger heap limit than V8's default (about 4 GiB here), for a million counters and their garbage. */
  maxOldSpaceMb?: number;
}

/** Runs one task in a child process, showing a drain's progress. */
function runChild(task: BaselineTask | AggregatorTask, label: string, ui: Progress, options?: ChildOptions): Promise<DrainResult>;
function runChild(task: CountersTask, label: string, ui: Progress, options?: ChildOptions): Promise<CounterBytes>;
function runChild(task: ReplayTask, label: string, ui: Progress, options?: ChildOptions): Promise<ReplayBench>;
function runChild(task: Task, label: string, ui: Progress, options: ChildOptions = {}): Promise<ChildResult> {
  checkAbort();
  const { cpuProfDir, maxOldSpaceMb } = options;
  const execArgv = [
    ...process.execArgv, '--expose-gc', ...(cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []),
    ...(maxOldSpaceMb ? [`--max-old-space-size=${maxOldSpaceMb}`] : []),
  ];
  const c = fork(SELF, ['--child'], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  running = c;
  ui.update(`${label}…`);
  return new Promise<ChildResult>((resolveRun, rejectRun) => {
    let result: ChildResult | undefined;
    let failure: string | undefined;
    c.on('message', (raw) => {
      const m = raw as ChildMessage;
      if (m.type === 'progress') {
        const r = m.ms > 0 ? `, ${perSec((m.done * 1000) / m.ms)}` : '';
        ui.update(`${label}: ${int(m.done)} / ${int(task.role === 'counters' ? task.n : task.expected)} events${r}`);
      } else if (m.type === 'result') result = m.result;
      else failure = m.message;
    });
    c.on('error', rejectRun);
    c.on('exit', (code, signal) => {
      if (running === c) running = undefined;
      if (result && code === 0) resolveRun(result);
      else rejectRun(new Error(`${label} failed (exit ${code ?? signal})${failure ? `: ${failure}` : ''}`));
    });
    c.send(task);
  });
}

/**
 * Sends `events` usage events, the i-th being `eventOf(i, start)` (start: when production began):
 * big batches, several in flight, no idempotence and no compression (fastest here).
 */
async function produceBacklog(
  kafka: Kafka, topic: string, events: number, eventOf: (i: number, start: number) => UsageEvent, policy: CompiledPolicy, ui: Progress, label: string,
): Promise<{ ms: number; bytes: number; start: number }> {
  const producer = kafka.producer({ idempotent: false, allowAutoTopicCreation: false, retry: { retries: 5 } });
  await producer.connect();
  const start = Date.now();
  // Keys repeat in the throughput backlog: resolve each once. (Every key is new in the memory backlogs.)
  const tenantOf = new Map<string, string>();
  const keyOf = (e: UsageEvent) => {
    const apiKey = e.subjects.api_key!;
    let tenant = tenantOf.get(apiKey);
    if (tenant === undefined) {
      const r = resolve(policy, { subjects: e.subjects });
      if (r.kind !== 'resolved') throw new Error(`the bench policy does not resolve ${apiKey}: ${r.reason}`);
      tenant = r.tenantKey;
      if (tenantOf.size < 100_000) tenantOf.set(apiKey, tenant);
    }
    return tenant;
  };
  let next = 0;
  let acked = 0;
  let sentBytes = 0;
  const t0 = performance.now();
  try {
    const worker = async () => {
      while (next < events) {
        checkAbort();
        const from = next;
        next = Math.min(events, next + PRODUCE_BATCH);
        const messages: Message[] = [];
        for (let i = from; i < next; i++) {
          const e = eventOf(i, start);
          const value = JSON.stringify(e);
          sentBytes += value.length;
          messages.push({ key: keyOf(e), value }); // keyed by tenant, as the gateways do
        }
        await producer.send({ topic, acks: 1, compression: CompressionTypes.None, messages });
        acked += messages.length;
        ui.update(`${label}: ${int(acked)} / ${int(events)} events (${perSec((acked * 1000) / (performance.now() - t0))})`);
      }
    };
    await Promise.all(Array.from({ length: PRODUCE_IN_FLIGHT }, worker));
  } finally {
    await producer.disconnect().catch(() => {});
  }
  return { ms: performance.now() - t0, bytes: sentBytes, start };
}

interface RedisInfo {
  cpuS: number;
  usedMemory: number;
  /** Objects UNLINK has handed to the background thread and not yet freed. */
  lazyfreePending: number;
}

async function redisInfo(redis: ReturnType<typeof createRedisClient>): Promise<RedisInfo> {
  const text = await redis.info();
  const num = (name: string) => Number(new RegExp(`^${name}:(\\S+)`, 'm').exec(text)?.[1] ?? NaN);
  return { cpuS: num('used_cpu_user') + num('used_cpu_sys'), usedMemory: num('used_memory'), lazyfreePending: num('lazyfree_pending_objects') };
}

/** Removes the keys under `prefix` and waits until Redis has freed them, so the next used_memory is a clean start. */
async function freeRedis(redis: ReturnType<typeof createRedisClient>, prefix: string): Promise<void> {
  await cleanRedis(redis, prefix, 10_000);
  const deadline = Date.now() + 60_000;
  while ((await redisInfo(redis)).lazyfreePending > 0 && Date.now() < deadline) await sleep(50);
}

/** ns per event of the per-event steps, in this process, on records of the backlog. */
interface StageCosts {
  parse: number;
  decode: number;
  resolve: number;
}

function stageCosts(runId: string, sizes: Sizes, shape: Shape, policy: CompiledPolicy, start: number): StageCosts {
  const n = Math.min(MICRO_SAMPLE, sizes.events);
  const records = Array.from({ length: n }, (_, i) => Buffer.from(JSON.stringify(usageEvent(runId, i, sizes, shape, start))));
  const now = Date.now();
  const opts = { now, futureSkewMs: 60_000 };
  const events = records.map((r) => {
    const d = decodeUsageEvent(r, opts);
    if (!d.ok) throw new Error(`a backlog record does not decode: ${d.reason} ${d.detail}`);
    return d.event;
  });
  let sink = 0;
  const time = (f: () => void) => {
    f(); // warm up
    const samples: number[] = [];
    for (let rep = 0; rep < 5; rep++) {
      const s = process.hrtime.bigint();
      f();
      samples.push(Number(process.hrtime.bigint() - s) / n);
    }
    return median(samples);
  };
  const parse = time(() => {
    for (const r of records) sink += (JSON.parse(r.toString('utf8')) as { cost: number }).cost;
  });
  const decode = time(() => {
    for (const r of records) sink += decodeUsageEvent(r, opts).ok ? 1 : 0;
  });
  const res = time(() => {
    for (const e of events) sink += resolve(policy, { api: e.api ?? undefined, method: e.method, path: e.path, subjects: e.subjects }).kind.length;
  });
  if (sink === 0) process.stderr.write('\n');
  return { parse, decode, resolve: res };
}

/** Per counter, `n` counters built without Kafka, Redis or an Aggregator around them. */
interface CounterBytes {
  n: number;
  /**
   * Heap + ArrayBuffers of a CounterState as the aggregator builds one on a load (resolve, new
   * CounterState, one admitted event), in its own tenant entry (fence, counters Map) in a Map by
   * tenant key, key strings included.
   */
  counterState: number;
  /** Of counterState, the part on the heap (the rest: the rings' ArrayBuffers). */
  counterStateHeap: number;
  /** RSS growth of the process while they were built (the first thing it built). */
  counterStateRss: number;
  /**
   * Heap + ArrayBuffers of a bare RollingCounter (bucket rings on one shared layout): the least a
   * counter could take. The same at any n; measured only when asked.
   */
  rollingCounter: number | undefined;
  /** How long building the CounterStates took, ms, and the full (mark-compact) GCs V8 ran meanwhile. */
  buildMs: number;
  majorGcs: number;
  majorGcMs: number;
  longestGcMs: number;
}

async function counterBytes(policy: CompiledPolicy, n: number, runId: string, withRings: boolean): Promise<CounterBytes> {
  const measure = () => {
    collect();
    const mu = process.memoryUsage();
    return { heap: mu.heapUsed, all: mu.heapUsed + mu.arrayBuffers, rss: mu.rss };
  };
  // CounterStates first, so their RSS growth is not served by memory freed earlier.
  const ctx: DecisionContext = { policyVersion: policy.version, region: 'bench', nearRatio: 0.8, message: () => '' };
  const effects: Effects = { decisions: [], breaches: [] };
  const start = Date.now();
  let m0 = measure();
  const gcs: PerformanceEntry[] = [];
  const observer = new PerformanceObserver((list) => gcs.push(...list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  const b0 = performance.now();
  let tenants: Map<string, { fence: number; counters: Map<string, CounterState> }> | undefined = new Map();
  for (let k = 0; k < n; k++) {
    const e = memoryEvent(runId, n, k, start);
    const r = resolve(policy, { subjects: e.subjects });
    if (r.kind !== 'resolved') throw new Error(`the bench policy does not resolve ${JSON.stringify(e.subjects)}: ${r.reason}`);
    const cs = new CounterState(r.counterKey, r.tenantKey, r.rule, r.limits, r.scopeKey);
    cs.admit(e.eventTime, e.cost, ctx, effects, e.gatewayId);
    tenants.set(r.tenantKey, { fence: k, counters: new Map([[r.counterKey, cs]]) });
  }
  const b1 = performance.now();
  await new Promise<void>((r) => setImmediate(r)); // GC entries reach observers on a later tick
  gcs.push(...observer.takeRecords());
  observer.disconnect();
  const major = gcs.filter((e) => e.startTime >= b0 && e.startTime < b1 && (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR);
  const build = { buildMs: b1 - b0, majorGcs: major.length, majorGcMs: major.reduce((t, e) => t + e.duration, 0), longestGcMs: Math.max(0, ...major.map((e) => e.duration)) };
  let m1 = measure();
  if (tenants.size !== n || effects.decisions.length) throw new Error(`built ${tenants.size} counters of ${n} (${effects.decisions.length} decisions)`);
  const counterState = { counterState: (m1.all - m0.all) / n, counterStateHeap: (m1.heap - m0.heap) / n, counterStateRss: (m1.rss - m0.rss) / n };
  tenants = undefined;
  if (!withRings) return { n, ...counterState, ...build, rollingCounter: undefined };

  const rule = policy.rules[0]!;
  const layout = new CounterLayout(rule.limits.map((l) => windowSpec(l.windowMs, { bucketMs: l.resolutionMs, kind: l.kind })));
  m0 = measure();
  const rings = Array.from({ length: n }, () => new RollingCounter(layout));
  m1 = measure();
  if (rings.length !== n) throw new Error('unreachable');
  return { n, ...counterState, ...build, rollingCounter: (m1.all - m0.all) / n };
}

/** Self time in a V8 CPU profile between two process.hrtime instants (µs), by category and by function. */
function summarizeProfile(file: string, fromUs: number, toUs: number): { total: number; categories: Array<[string, number]>; functions: Array<[string, number]> } {
  interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }
  const p = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; startTime: number; samples: number[]; timeDeltas: number[] };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let t = p.startTime;
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    t += dt;
    if (t < fromUs || t > toUs) continue;
    const id = p.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + dt);
    total += dt;
  }
  const categories = new Map<string, number>();
  const functions = new Map<string, number>();
  for (const [id, time] of self) {
    const { functionName: fn, url, lineNumber } = byId.get(id)!.callFrame;
    const cat = categoryOf(fn, url);
    categories.set(cat, (categories.get(cat) ?? 0) + time);
    const file = url.replace(/^file:\/\//, '').replace(ROOT + '/', '').replace(/^.*node_modules\//, '');
    const where = url ? (lineNumber > 0 ? `${file}:${lineNumber + 1}` : file) : 'native';
    const name = `${fn || '(anonymous)'} (${where})`;
    functions.set(name, (functions.get(name) ?? 0) + time);
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return { total, categories: sorted(categories), functions: sorted(functions).slice(0, 12) };
}

/** What would shrink each profile category, by category prefix. */
const LEVERS: Array<[string, string]> = [
  ['src/windows', 'RollingCounter.state() runs for every event (CounterState.evaluate): it sums every bucket of each window, scans for the reset time and allocates a LimitState per limit; a running sum per window, and the full state only when a limit is near, reached or blocked, would remove most of it'],
  ['garbage collection', 'fewer allocations per event (the LimitState objects of RollingCounter.state, the bucket field string and increment object of the fold, the decoded event itself)'],
  ['src/aggregator/decode.ts', 'decoding: JSON.parse plus zod per event; a hand-written check for the one hot layout (zod only to explain a rejected event)'],
  ['zod', 'zod safeParse per event: a hand-written check for the one hot layout, zod only to explain a rejected event'],
  ['src/aggregator', 'the fold in onBatch (a `${bucketMs}:${bucketIndex}` string and two Map lookups per event and bucket size): per-counter increments indexed by bucket, not by string'],
  ['src/policy', 'resolve() per event: cache the resolution per (api, subjects) within a batch'],
  ['kafkajs', "kafkajs's fetch and record decoding (what the bare consumer spends too): larger batches, or a client with native decoding"],
  ['ioredis', 'building and encoding the store write: fewer, flatter arguments per batch'],
  ['src/store', 'building the store write: fewer, flatter arguments per batch'],
  ['OpenTelemetry', 'the per-batch instrument calls and span (no-op without an SDK)'],
  ['Node internals', 'Buffer to string conversions and socket writes'],
];

function categoryOf(fn: string, url: string): string {
  if (fn === '(garbage collector)') return 'garbage collection';
  if (fn === '(idle)') return 'idle (waiting on Kafka / Redis)';
  if (fn === '(program)') return 'V8 and native code outside JS (program)';
  if (url.includes('/node_modules/zod/')) return 'zod (usage event validation)';
  if (url.includes('/node_modules/kafkajs/')) return 'kafkajs (fetch, record batch decoding, commits, produce)';
  if (url.includes('/node_modules/ioredis/') || url.includes('/node_modules/redis-parser/') || url.includes('/node_modules/redis-errors/')) return 'ioredis (command encoding, reply parsing)';
  if (url.includes('/node_modules/@opentelemetry/')) return 'OpenTelemetry API (no-op instruments)';
  if (url.includes('/src/aggregator/decode.ts')) return 'src/aggregator/decode.ts (incl. JSON.parse, isUtf8)';
  const src = /\/src\/([^/]+)\//.exec(url);
  if (src) return `src/${src[1]}`;
  if (url.startsWith('node:')) return 'Node internals (buffers, streams, timers, sockets)';
  if (url === '') return `native: ${fn || '(anonymous)'}`;
  return 'other';
}

// ─── main ───────────────────────────────────────────────────────────────────────────────────────

interface RunResult {
  baseline: DrainResult;
  ours: DrainResult;
  redis: { cpuS: number; memory: number } | undefined;
  /** `quotaflow replay` over the same backlog, after the drains of the run. */
  dryRun: ReplayBench;
  /** First run only. */
  rebuild: ReplayBench | undefined;
}

interface MemoryResult {
  /** Counters: one new key per event. */
  n: number;
  /** The backlog, when an Aggregator drains this size. */
  produced?: { ms: number; bytes: number };
  drains: Array<{ result: DrainResult; redisBytes: number | undefined }>;
  alone: CounterBytes[];
}

async function main(): Promise<number> {
  const info = runInfo(SELF);
  const values = benchArgs(HELP, {
    quick: { type: 'boolean' }, runs: { type: 'string' }, events: { type: 'string' }, keys: { type: 'string' }, counters: { type: 'string' }, 'drain-up-to': { type: 'string' },
    out: { type: 'string' }, 'no-cpu-prof': { type: 'boolean' },
  });
  if (typeof values === 'number') return values;
  const sizes: Sizes = { ...(values.quick ? QUICK : FULL) };
  const whole = (name: 'runs' | 'events' | 'keys', min: number, max: number): boolean => {
    const n = wholeNumber(`--${name}`, values[name], min, max);
    if (n !== undefined && n !== null) sizes[name] = n;
    return n !== null;
  };
  if (!whole('runs', 1, 50) || !whole('events', 1_000, 100_000_000) || !whole('keys', 1, 10_000_000)) return 2;
  if (sizes.keys > sizes.events) {
    process.stderr.write(`--keys ${int(sizes.keys)} is more than --events ${int(sizes.events)}: every key needs at least one event\n`);
    return 2;
  }
  if (values.counters !== undefined) {
    const list = values.counters === '0' ? [] : values.counters.split(',').map((x) => wholeNumber('--counters', x.trim(), 1_000, 10_000_000));
    if (list.some((n) => n === null || n === undefined)) return 2;
    sizes.memoryCounters = list as number[];
  }
  const drainUpTo = wholeNumber('--drain-up-to', values['drain-up-to'], 0, 10_000_000);
  if (drainUpTo === null) return 2;
  if (drainUpTo !== undefined) sizes.drainUpTo = drainUpTo;
  const outFile = resolvePath(values.out ?? join(HERE, 'results', 'aggregator.md'));
  const logLevel = (process.env.QUOTAFLOW_LOG as Level | 'silent' | undefined) ?? 'warn';
  configureLogging({ level: logLevel, format: 'pretty' });
  stopOnCtrlC(() => running?.kill('SIGTERM'));

  const ui = progress();
  const runId = randomBytes(3).toString('hex');
  const shape = shapeOf(sizes);
  const text = policyText(shape);
  const policy = compilePolicy(parsePolicyText(text, 'aggregator-bench.yaml'));
  const windowsPerCounter = policy.rules[0]!.limits.length;
  /** One rule per API key: a counter (one counter key, its windows) per key. */
  const counters = sizes.keys;
  const topicPrefix = `bench-${runId}-agg.`;
  const topics = topicNames(topicPrefix);
  const redisPrefix = `bench-${runId}-`;
  const groups: string[] = [];

  ui.update('starting Kafka and Redis (or using KAFKA_BROKERS / REDIS_URL)…');
  const stack = await resolveStack({ env: process.env });
  const kafka = createKafka({ brokers: stack.brokers, clientId: `quotaflow-bench-${runId}`, minLogLevel: 'error' });
  const admin = kafka.admin();
  const redis = createRedisClient(stack.redisUrl, { log: logger('bench.redis') });
  let topicsCreated: string[] = [];
  try {
    await admin.connect();
    await whenReady(redis, 10_000, `connect to ${stack.redisUrl}`);
    const rv = stack.redis.version ?? (await redisVersion(redis));
    topicsCreated = await ensureTopics(admin, topicSpecs(topics, { usagePartitions: USAGE_PARTITIONS }));

    // ── setup: the backlog ──
    const produced = await produceBacklog(kafka, topics.usage, sizes.events, (i, start) => usageEvent(runId, i, sizes, shape, start), policy, ui, 'setup: producing the backlog');
    const offsets = await admin.fetchTopicOffsets(topics.usage);
    const backlog = offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
    if (backlog !== sizes.events) throw new Error(`the usage topic holds ${backlog} events, expected ${sizes.events}`);
    const perPartition = offsets.map((o) => Number(o.high) - Number(o.low)).sort((a, b) => a - b);
    ui.done(`setup: ${int(backlog)} events (${(produced.bytes / 2 ** 20).toFixed(0)} MiB of JSON) over ${int(sizes.keys)} keys in ${(produced.ms / 1000).toFixed(1)} s (${perSec((backlog * 1000) / produced.ms)}); ${USAGE_PARTITIONS} partitions of ${int(perPartition[0]!)}–${int(perPartition[perPartition.length - 1]!)}`);

    // ── the runs: baseline and ours on the same backlog, alternating which goes first ──
    const runs: RunResult[] = [];
    for (let run = 0; run < sizes.runs; run++) {
      const tag = `[run ${run + 1}/${sizes.runs}]`;
      const baselineTask = (): Promise<DrainResult> => {
        const groupId = `bench-${runId}-bare-${run}`;
        groups.push(groupId);
        return runChild({ role: 'baseline', brokers: stack.brokers, topic: topics.usage, groupId, expected: backlog, logLevel }, `${tag} bare kafkajs consumer`, ui);
      };
      const oursTask = async (): Promise<{ result: DrainResult; redis: RunResult['redis'] }> => {
        const groupId = `bench-${runId}-aggregators-${run}`;
        groups.push(groupId);
        const info0 = stack.redis.source === 'external' ? undefined : await redisInfo(redis);
        const result = await runChild({
          role: 'aggregator', brokers: stack.brokers, redisUrl: stack.redisUrl, keyPrefix: `${redisPrefix}r${run}:`, topicPrefix, groupId, expected: backlog,
          policyText: text, logLevel,
        }, `${tag} aggregator`, ui);
        const info1 = info0 && (await redisInfo(redis));
        return { result, redis: info0 && info1 ? { cpuS: info1.cpuS - info0.cpuS, memory: info1.usedMemory - info0.usedMemory } : undefined };
      };
      let baseline: DrainResult;
      let ours: Awaited<ReturnType<typeof oursTask>>;
      if (run % 2 === 0) {
        baseline = await baselineTask();
        ours = await oursTask();
      } else {
        ours = await oursTask();
        baseline = await baselineTask();
      }
      const a = ours.result.agg!;
      if (a.late || a.dlq || a.counted !== backlog) {
        throw new Error(`the aggregator counted ${a.counted} of ${backlog} events (${a.late} late, ${a.dlq} to the DLQ): the backlog is not what this benchmark means to measure`);
      }
      const replayTask = (mode: ReplayTask['mode']) => runChild({
        role: 'replay', mode, brokers: stack.brokers, redisUrl: stack.redisUrl, keyPrefix: `${redisPrefix}rb${run}:`, topicPrefix, expected: backlog, policyText: text, logLevel,
      }, `${tag} quotaflow replay --${mode}`, ui);
      // The rebuild adds the write of every counter to the fold: once is enough (the 10-minute budget).
      const dryRun = await replayTask('dry-run');
      const rebuild = run === 0 ? await replayTask('rebuild') : undefined;
      runs.push({ baseline, ours: ours.result, redis: ours.redis, dryRun, rebuild });
      const r = runs[runs.length - 1]!;
      ui.done(`${tag} bare consumer ${perSec((r.baseline.events * 1000) / r.baseline.ms)}, aggregator ${perSec((r.ours.events * 1000) / r.ours.ms)} (${ratio(r.ours.events / r.ours.ms, r.baseline.events / r.baseline.ms)}), ` +
        `replay --dry-run ${perSec(replayEps(r.dryRun))}${r.rebuild ? `, --rebuild ${perSec(replayEps(r.rebuild))}` : ''}`);
    }

    // ── one more drain under the profiler, not counted ──
    let profile: ReturnType<typeof summarizeProfile> & { file: string } | undefined;
    if (!values['no-cpu-prof']) {
      const dir = mkdtempSync(join(os.tmpdir(), `quotaflow-bench-aggregator-${runId}-`));
      const groupId = `bench-${runId}-aggregators-profiled`;
      groups.push(groupId);
      const r = await runChild({
        role: 'aggregator', brokers: stack.brokers, redisUrl: stack.redisUrl, keyPrefix: `${redisPrefix}prof:`, topicPrefix, groupId, expected: backlog,
        policyText: text, logLevel,
      }, '[profile] aggregator under the V8 profiler (not counted)', ui, { cpuProfDir: dir });
      // One profile per thread (tsx's module loader has its own, idle): keep the one that ran the drain.
      for (const f of readdirSync(dir).filter((n) => n.endsWith('.cpuprofile')).map((n) => join(dir, n))) {
        const summary = summarizeProfile(f, r.fromUs, r.toUs);
        const busyIn = (x: { total: number; categories: Array<[string, number]> }) => x.total - (x.categories.find(([c]) => c.startsWith('idle'))?.[1] ?? 0);
        if (!profile || busyIn(summary) > busyIn(profile)) {
          if (profile) rmSync(profile.file);
          profile = { ...summary, file: f };
        } else rmSync(f);
      }
      ui.done(`[profile] aggregator ${perSec((r.events * 1000) / r.ms)} under the profiler (not counted); profile: ${profile?.file ?? `none written in ${dir}`}`);
    }

    // ── memory: N counters held by an Aggregator (up to drainUpTo), and the same counters built alone ──
    const memory: MemoryResult[] = [];
    for (const n of sizes.memoryCounters) {
      const tag = `[memory, ${int(n)} counters]`;
      const drained = n <= sizes.drainUpTo;
      const t0 = Date.now();
      const result: MemoryResult = { n, drains: [], alone: [] };
      memory.push(result);
      let prefix = '';
      if (drained) {
        prefix = `bench-${runId}-mem${n}.`;
        const memTopics = topicNames(prefix);
        topicsCreated.push(...(await ensureTopics(admin, topicSpecs(memTopics, { usagePartitions: USAGE_PARTITIONS }))));
        result.produced = await produceBacklog(kafka, memTopics.usage, n, (k, start) => memoryEvent(runId, n, k, start), policy, ui, `${tag} producing one event for each of ${int(n)} new keys`);
      }
      const runsHere = drained ? sizes.memoryRuns : sizes.aloneRuns;
      for (let r = 0; r < runsHere; r++) {
        const run = `run ${r + 1}/${runsHere}`;
        if (drained) {
          const groupId = `bench-${runId}-mem${n}-${r}`;
          const keyPrefix = `${redisPrefix}m${n}-${r}:`;
          groups.push(groupId);
          const info0 = stack.redis.source === 'external' ? undefined : await redisInfo(redis);
          const d = await runChild({
            role: 'aggregator', brokers: stack.brokers, redisUrl: stack.redisUrl, keyPrefix, topicPrefix: prefix, groupId, expected: n, policyText: text, logLevel,
          }, `${tag} ${run}: an Aggregator draining them`, ui);
          const info1 = info0 && (await redisInfo(redis));
          const a = d.agg!;
          if (a.counted !== n || a.late || a.dlq) throw new Error(`${tag} the aggregator counted ${a.counted} of ${n} events (${a.late} late, ${a.dlq} to the DLQ)`);
          ui.update(`${tag} ${run}: removing its ${int(2 * n)} Redis keys…`);
          await freeRedis(redis, keyPrefix);
          result.drains.push({ result: d, redisBytes: info0 && info1 ? info1.usedMemory - info0.usedMemory : undefined });
        }
        // A bare RollingCounter's size does not depend on how many there are: measured at the first size only.
        const withRings = n === sizes.memoryCounters[0];
        result.alone.push(await runChild({ role: 'counters', n, withRings, runId, policyText: text, logLevel }, `${tag} ${run}: the same counters built alone`, ui));
      }
      const alone = median(result.alone.map((a) => a.counterState));
      const held = result.drains.length ? `held by an Aggregator ${bytes(median(result.drains.map((d) => d.result.retained! / n)))} per counter, ` : '';
      ui.done(`${tag} ${held}built alone ${bytes(alone)} (built in ${(median(result.alone.map((a) => a.buildMs)) / 1000).toFixed(1)} s); ${((Date.now() - t0) / 1000).toFixed(0)} s in all`);
    }

    ui.update('per-event steps in this process (JSON.parse, decode, resolve)…');
    const stages = stageCosts(runId, sizes, shape, policy, produced.start);
    const alone = await counterBytes(policy, counters, runId, true);
    ui.done();

    // ── figures ──
    const eps = (d: DrainResult) => (d.events * 1000) / d.ms;
    const baseEps = runs.map((r) => eps(r.baseline));
    const oursEps = runs.map((r) => eps(r.ours));
    const ratios = runs.map((r) => eps(r.ours) / eps(r.baseline));
    const agg = runs.map((r) => r.ours.agg!);
    const cpuPerEvent = (d: DrainResult) => (d.cpuMs * 1000) / d.events;
    const heapPer = (d: DrainResult, n: number) => (d.after.heap - d.before.heap) / n;
    const heapAbPer = (d: DrainResult, n: number) => (d.after.heap + d.after.arrayBuffers - d.before.heap - d.before.arrayBuffers) / n;
    const rssPer = (d: DrainResult, n: number) => (d.after.rss - d.before.rss) / n;
    const redisRuns = runs.filter((r) => r.redis !== undefined);
    const m = (xs: number[]) => median(xs);
    const rebuilds = runs.flatMap((r) => (r.rebuild ? [[r, r.rebuild] as const] : []));
    const oursCpu = m(runs.map((r) => cpuPerEvent(r.ours)));
    const baseCpu = m(runs.map((r) => cpuPerEvent(r.baseline)));
    const busy = m(runs.map((r) => r.ours.cpuMs / r.ours.ms));
    const baseHeapPerCounter = m(runs.map((r) => heapPer(r.baseline, counters)));
    const storeMsPerBatch = agg.map((a) => (a.loadMs + a.applyMs) / (a.loads + a.applies));
    const storeShare = runs.map((r) => (r.ours.agg!.loadMs + r.ours.agg!.applyMs) / PARTITIONS_CONCURRENTLY / r.ours.ms);

    const figures: Figure[] = [
      { name: 'bare kafkajs consumer: events/s', values: baseEps, fmt: perSec, vs: 'baseline' },
      { name: 'aggregator: events/s (until all committed)', values: oursEps, fmt: perSec, vs: `${ratio(m(oursEps), m(baseEps))} of medians` },
      { name: 'ratio aggregator / bare consumer, per run', values: ratios, fmt: (n) => `${n.toFixed(2)}×` },
      {
        name: 'quotaflow replay --dry-run (fold only): events/s', values: runs.map((r) => replayEps(r.dryRun)), fmt: perSec,
        vs: `${ratio(m(runs.map((r) => replayEps(r.dryRun) / eps(r.ours))), 1)} the aggregator (median of per-run ratios); CPU ${us(m(runs.map((r) => (r.dryRun.cpuMs * 1000) / r.dryRun.events)))} per event`,
      },
      {
        name: 'quotaflow replay --rebuild (fold, then write to Redis), run 1: events/s', values: rebuilds.map(([, b]) => replayEps(b)), fmt: perSec,
        vs: `${ratio(m(rebuilds.map(([r, b]) => replayEps(b) / eps(r.ours))), 1)} the aggregator; writing ${int(m(rebuilds.map(([, b]) => b.counters)))} counters took ${ms(m(rebuilds.map(([, b]) => b.writeMs)))}`,
      },
      { name: 'aggregator: Redis round trips per batch', values: agg.map((a) => a.storeRoundTrips / a.batches), fmt: fixed(2), vs: `loads ${fixed(2)(m(agg.map((a) => a.loads / a.batches)))} + batch writes ${fixed(2)(m(agg.map((a) => a.applies / a.batches)))} + lapse-timer writes ${fixed(2)(m(agg.map((a) => a.metaWrites / a.batches)))}` },
      { name: 'aggregator: events per batch', values: runs.map((r) => r.ours.events / r.ours.batches), fmt: int, vs: `bare consumer: ${int(m(runs.map((r) => r.baseline.events / r.baseline.batches)))}` },
      { name: 'aggregator: store round trip (wall), mean', values: storeMsPerBatch, fmt: ms, vs: `load ${ms(m(agg.map((a) => a.loadMs / a.loads)))}, write ${ms(m(agg.map((a) => a.applyMs / a.applies)))}` },
      { name: 'aggregator: CPU per event (process)', values: runs.map((r) => cpuPerEvent(r.ours)), fmt: us, vs: `bare consumer: ${us(baseCpu)} (${ratio(oursCpu, baseCpu)})` },
      { name: 'aggregator: CPU busy (CPU time / wall time)', values: runs.map((r) => r.ours.cpuMs / r.ours.ms), fmt: (n) => `${(n * 100).toFixed(0)}%`, vs: `bare consumer: ${(m(runs.map((r) => r.baseline.cpuMs / r.baseline.ms)) * 100).toFixed(0)}%` },
      { name: `aggregator: heap growth per counter (${int(counters)} counters of ${windowsPerCounter} windows)`, values: runs.map((r) => heapPer(r.ours, counters)), fmt: bytes, vs: `bare consumer: ${bytes(baseHeapPerCounter)}` },
      { name: 'aggregator: heap + ArrayBuffers growth per counter', values: runs.map((r) => heapAbPer(r.ours, counters)), fmt: bytes, vs: `bare consumer: ${bytes(m(runs.map((r) => heapAbPer(r.baseline, counters))))}` },
      { name: 'aggregator: RSS growth per counter', values: runs.map((r) => rssPer(r.ours, counters)), fmt: bytes, vs: `bare consumer: ${bytes(m(runs.map((r) => rssPer(r.baseline, counters))))}` },
      {
        name: 'aggregator: held by its counters and tenants at the end, per counter', values: runs.map((r) => r.ours.retained! / counters), fmt: bytes,
        vs: `built alone: ${bytes(alone.counterState)} (CounterState, tenant entry, keys), its RollingCounter ${bytes(alone.rollingCounter!)}`,
      },
    ];
    if (redisRuns.length) {
      figures.push(
        { name: 'Redis: memory per counter', values: redisRuns.map((r) => r.redis!.memory / counters), fmt: bytes },
        { name: 'Redis: CPU per event (server, Lua included)', values: redisRuns.map((r) => (r.redis!.cpuS * 1e6) / r.ours.events), fmt: us },
      );
    }
    figures.push(
      { name: 'decisions published (blocks, near, unblocks)', values: agg.map((a) => a.decisions), fmt: int, vs: `${shape.hotKeys} hot key(s) cross the minute limit` },
    );

    const memoryFigures: Figure[] = memory.flatMap(({ n, drains: ds, alone: as }) => {
      const at = `${int(n)} counters`;
      const redisDrains = ds.filter((d) => d.redisBytes !== undefined);
      const drained: Figure[] = ds.length
        ? [
          {
            name: `${at}, an Aggregator: held by its counters and tenants, per counter`, values: ds.map((d) => d.result.retained! / n), fmt: bytes,
            vs: `${ratio(median(ds.map((d) => d.result.retained! / n)), median(as.map((a) => a.counterState)))} the same counters built alone`,
          },
          { name: `${at}, an Aggregator: heap growth per counter`, values: ds.map((d) => heapPer(d.result, n)), fmt: bytes, vs: `heap after: ${mib(median(ds.map((d) => d.result.after.heap)))}` },
          { name: `${at}, an Aggregator: heap + ArrayBuffers growth per counter`, values: ds.map((d) => heapAbPer(d.result, n)), fmt: bytes },
          { name: `${at}, an Aggregator: RSS growth per counter`, values: ds.map((d) => rssPer(d.result, n)), fmt: bytes, vs: `RSS after: ${mib(median(ds.map((d) => d.result.after.rss)))}` },
          ...(redisDrains.length
            ? [{ name: `${at}, Redis: memory per counter`, values: redisDrains.map((d) => d.redisBytes! / n), fmt: bytes, vs: `used_memory +${mib(median(redisDrains.map((d) => d.redisBytes!)))}` }]
            : []),
          {
            name: `${at}, an Aggregator: drain events/s (each event a new counter)`, values: ds.map((d) => eps(d.result)), fmt: perSec,
            vs: `${fixed(2)(median(ds.map((d) => d.result.agg!.storeRoundTrips / d.result.agg!.batches)))} Redis round trips per batch`,
          },
        ]
        : [];
      return [
        ...drained,
        {
          name: `${at}, built alone: CounterState, tenant entry and keys, per counter`, values: as.map((a) => a.counterState), fmt: bytes,
          vs: `${bytes(median(as.map((a) => a.counterStateHeap)))} of it on the heap${ds.length ? '' : '; no Aggregator drained this size'}`,
        },
        { name: `${at}, built alone: RSS growth per counter`, values: as.map((a) => a.counterStateRss), fmt: bytes },
        {
          name: `${at}, built alone: time to build them`, values: as.map((a) => a.buildMs), fmt: (x) => `${(x / 1000).toFixed(1)} s`,
          vs: `of it, ${int(median(as.map((a) => a.majorGcs)))} full GCs: ${int(median(as.map((a) => a.majorGcMs)))} ms, the longest ${int(median(as.map((a) => a.longestGcMs)))} ms`,
        },
        ...(as.some((a) => a.rollingCounter !== undefined)
          ? [{ name: `${at}, built alone: a bare RollingCounter`, values: as.map((a) => a.rollingCounter!), fmt: bytes, vs: 'its bucket rings: the least a counter could take, at any size' }]
          : []),
      ];
    });

    const rows = figures.map((f) => [f.name, f.fmt(median(f.values)), spread(f), f.vs ?? '']);
    process.stdout.write(`\n${table(['figure', 'median', 'min – max', 'vs baseline'], rows)}\n\n`);
    if (memoryFigures.length) {
      process.stdout.write(`${table(['memory at scale', 'median', 'min – max', 'note'], memoryFigures.map((f) => [f.name, f.fmt(median(f.values)), spread(f), f.vs ?? '']))}\n\n`);
    }
    const stageRows: Array<[string, number]> = [
      ['JSON.parse (Buffer → string → object)', stages.parse],
      ['decodeUsageEvent (isUtf8 + JSON.parse + zod safeParse)', stages.decode],
      ['  of which zod and checks (decode − JSON.parse)', stages.decode - stages.parse],
      ['resolve() (rule, subjects, tenant and counter key)', stages.resolve],
    ];
    process.stdout.write(`${table(['per-event step, in this process', 'ns/event'], stageRows.map(([n, v]) => [n, int(v)]))}\n\n`);
    if (profile) {
      const pct = (t: number) => `${((100 * t) / profile!.total).toFixed(1)}%`;
      process.stdout.write(`${table(['aggregator CPU profile, self time during the drain', 'share'], profile.categories.slice(0, 12).map(([c, t]) => [c, pct(t)]))}\n\n`);
    }

    // ── what would make it faster: from what this run saw ──
    const oursUs = oursCpu;
    const extraUs = oursCpu - baseCpu;
    const decodeUs = stages.decode / 1000;
    const resolveUs = stages.resolve / 1000;
    const redisCpuUs = redisRuns.length ? m(redisRuns.map((r) => (r.redis!.cpuS * 1e6) / r.ours.events)) : NaN;
    const candidates: Array<[number, string]> = [
      [decodeUs, `decoding (JSON.parse + zod safeParse, ${us(decodeUs)} of the ${us(oursUs)} CPU per event): a hand-written check for the one hot layout, zod only to explain a rejected event`],
      [resolveUs, `resolve() per event (${us(resolveUs)}): cache the resolution per (api, subjects) within a batch, which repeats the same keys many times`],
      [Math.max(0, extraUs - decodeUs - resolveUs), `the fold and the store write (${us(Math.max(0, extraUs - decodeUs - resolveUs))} per event beyond decode and resolve; the profiled drain says which part)`],
    ];
    // On a shared machine CPU time / wall time also drops when others take the cores; the profile's
    // idle share (the event loop waiting on I/O) says whether the process itself was waiting.
    const idleShare = profile ? (profile.categories.find(([c]) => c.startsWith('idle'))?.[1] ?? 0) / profile.total : undefined;
    const cpuBound = idleShare !== undefined ? idleShare < 0.25 : busy > 0.75;
    const busyText = `${idleShare !== undefined ? `idle ${(idleShare * 100).toFixed(0)}% of the profiled drain, ` : ''}${(busy * 100).toFixed(0)}% busy (CPU time / wall time), ${us(oursUs)} CPU per event against ${us(baseCpu)} for the bare consumer`;
    let lever: string;
    if (profile) {
      const shown = profile.categories.filter(([c]) => !c.startsWith('idle') && !c.startsWith('V8 and native')).slice(0, 3);
      const share = (t: number) => `${((100 * t) / profile!.total).toFixed(0)}%`;
      lever = `the profile puts ${shown.map(([c, t]) => `${c} ${share(t)}`).join(', ')} on top — ${shown.slice(0, 2).map(([c]) => LEVERS.find(([prefix]) => c.startsWith(prefix))?.[1] ?? c).join('; and ')}`;
    } else {
      lever = `the largest share is ${candidates.reduce((x, y) => (y[0] > x[0] ? y : x))[1]}`;
    }
    const faster = (cpuBound
      ? `the aggregator is CPU-bound (${busyText}); ${lever}`
      : `the aggregator is not CPU-bound (${busyText}): it waits on Redis (a store round trip of ${ms(m(storeMsPerBatch))}, ~${(m(storeShare) * 100).toFixed(0)}% of each partition slot's time), so more partitions in flight or decoding the next batch during the write come first; then ${lever}`) +
      `${Number.isFinite(redisCpuUs) ? `. Redis itself spends ${us(redisCpuUs)} per event (the Lua script), ${((redisCpuUs * m(oursEps)) / 1e4).toFixed(0)}% of a core at this rate: ${(redisCpuUs * m(oursEps)) / 1e6 < 0.5 ? 'not the limit yet' : 'close to being the limit'}` : ''}.`;

    // At the most counters measured (else the drain's): what a counter holds beyond its rings.
    const largest = memory[memory.length - 1];
    const largestDrained = memory.filter((x) => x.drains.length).pop();
    const heldAt = !largest
      ? `${bytes(m(runs.map((r) => r.ours.retained! / counters)))} in the Aggregator`
      : largest.drains.length
        ? `${bytes(median(largest.drains.map((d) => d.result.retained! / largest.n)))} in the Aggregator`
        : `${bytes(median(largest.alone.map((a) => a.counterState)))} (built alone as the aggregator builds it)`;
    const ringAt = memory.length ? median(memory[0]!.alone.map((a) => a.rollingCounter!)) : alone.rollingCounter!;
    const redisSparse = largestDrained?.drains.filter((d) => d.redisBytes !== undefined).map((d) => d.redisBytes! / largestDrained.n) ?? [];
    const redisBusy = redisRuns.map((r) => r.redis!.memory / counters);
    const smaller = `at ${int(largest?.n ?? counters)} counters each holds ${heldAt} against ${bytes(ringAt)} for its RollingCounter (the bucket rings) alone; the rest is what surrounds it — ` +
      'the CounterState with its own windows array and WindowSpec objects and bucketSizes array (layoutFor shares the ring layout, not these), two Maps (open breaches, meta changes) allocated even when empty, ' +
      'the TenantState and its counters Map (one tenant per counter here), and the key strings; sharing the per-rule arrays and creating the Maps on first use would bring a counter near its RollingCounter' +
      (redisSparse.length && redisBusy.length
        ? `. In Redis a counter takes ${bytes(median(redisSparse))} when one bucket of each size holds a count (the memory section) but ${bytes(median(redisBusy))} with ~${int(shape.perKey)} events over the last minute (the drain section), ` +
          'as its hash gains a field per bucket (up to one per second of the minute window and one per minute of the hour window); keeping each ring as one packed binary field, rather than a hash field per bucket, would shrink a busy counter most'
        : '') +
      (largest
        ? `. Holding them costs time too: building ${int(largest.n)} took ${(median(largest.alone.map((a) => a.buildMs)) / 1000).toFixed(1)} s, ${(median(largest.alone.map((a) => a.majorGcMs)) / 1000).toFixed(1)} s of it in ` +
          `${int(median(largest.alone.map((a) => a.majorGcs)))} full GCs that each mark every live counter's objects, the longest pausing the process for ${int(median(largest.alone.map((a) => a.longestGcMs)))} ms — ` +
          'in an Aggregator, a pause in consuming and deciding; fewer objects per counter (above), or the rings of many counters in one slab, would shorten them'
        : '') + '.';

    // ── the report ──
    const a0 = agg[0]!;
    const runsNote = sizes.runs > 1 ? ', with min – max over the runs' : ' (no spread with one run: use --runs)';
    const memoryRunsNote = memory.length ? `; the memory section's, of ${sizes.memoryRuns} run(s) per size drained through an Aggregator${memory.some((x) => !x.drains.length) ? ` and ${sizes.aloneRuns} per larger size` : ''}` : '';
    const skipped = FULL.memoryCounters.filter((n) => !sizes.memoryCounters.includes(n));
    /** (max − min) / median, as a percentage. */
    const spreadShare = (xs: number[]) => `${((100 * (Math.max(...xs) - Math.min(...xs))) / median(xs)).toFixed(2)}%`;
    const report = [
      '# Aggregator benchmark',
      '',
      `${generatedLine(info)} Every throughput figure is the median of ${sizes.runs} run(s)${runsNote}${memoryRunsNote}; the ratio is taken within each run.`,
      '',
      machineLine(info, { stack, redisVersion: rv }),
      '',
      '## Setup (not measured)',
      '',
      `A backlog of ${int(backlog)} valid usage events (${(produced.bytes / 2 ** 20).toFixed(0)} MiB of JSON, ~${int(produced.bytes / backlog)} B each, no compression) in a topic of ${USAGE_PARTITIONS} partitions, keyed by tenant as the gateways do, ` +
        `from ${GATEWAYS} gateway ids, event times spread evenly over the minute before production (none late, none in the future). ` +
        `${int(sizes.keys)} API keys: each ordinary key has ~${int(shape.perKey)} events; 1 event in ${HOT_EVERY} goes to ${shape.hotKeys} hot key(s) (~${int(shape.perHotKey)} events each), the only ones to cross a limit. ` +
        `Policy (inline in the benchmark): one default rule per api_key, ${int(shape.minuteLimit)} per 60 s and ${int(shape.hourLimit)} per 1 h, both rolling. ` +
        `Produced in ${(produced.ms / 1000).toFixed(1)} s (batches of ${int(PRODUCE_BATCH)}, ${PRODUCE_IN_FLIGHT} in flight, non-idempotent, acks=1).`,
      '',
      '## Drain throughput',
      '',
      `Each run drains the whole backlog twice, in separate child processes (fresh heap and JIT), in alternating order: ` +
        `**baseline**, a bare kafkajs consumer (new group, fromBeginning, eachBatch that counts the messages and resolves the last offset; the Aggregator's consumer settings: maxBytesPerPartition 4 MiB, ${PARTITIONS_CONCURRENTLY} partitions consumed concurrently, session 30 s); ` +
        `**ours**, one Aggregator (new group, real Redis with a new key prefix so it starts empty; decode and validate, resolve, load the tenants it does not hold, fold, publish decisions, one fenced write per batch, commit). ` +
        'events/s counts from the first batch handed to the code to the last event counted (baseline) or committed (ours). ' +
        `CPU is the child's process.cpuUsage() over that interval. Memory, per counter (a counter: one counter key with its rule's windows, here ${windowsPerCounter} — one CounterState in the aggregator, one hash in Redis; ${int(counters)} of them, one per API key): heap (heapUsed), heap + ArrayBuffers (the counters' Float64Array rings live outside the heap) and RSS, after − before the drain, each after two GCs (before: the process with its Redis connection, before the consumer starts; after: every counter in memory, the consumer idle); ` +
        'RSS also carries the fetch buffers and the heap\'s headroom, so it is shown beside the bare consumer\'s. "Held by its counters and tenants": heap + ArrayBuffers freed when the stopped Aggregator\'s per-partition state (tenants, counters, blocked sets) is dropped, against as many counters built alone in the benchmark\'s own process (see the memory section). ' +
        'Redis memory and CPU: INFO used_memory and used_cpu_user + used_cpu_sys around the aggregator\'s drain (the local Redis serves only this benchmark).',
      '',
      ...mdTable(figures, 'vs baseline'),
      '',
      `Checks: every run counted all ${int(backlog)} events (0 late, 0 to the DLQ); run 1: ${int(a0.batches)} batches, ${int(a0.loads)} loads, ${int(a0.applies)} batch writes and ${int(a0.metaWrites)} lapse-timer (meta-only) writes, ${int(a0.decisions)} decisions and ${int(a0.breachRecords)} breach records published, ${a0.conflicts} fence conflicts, ${a0.storeFailures} failed store calls, ${a0.crashes} consumer restarts, ${int(a0.skippedBelowFence)} redelivered events skipped below a fence, ${int(a0.consumed)} events decoded in all.`,
      '',
      `Decisions: by the time a run drains the backlog its event times are up to a minute old or older, so a hot key's block (decided on event time) is often past its \`until\` by the wall clock when published; the lapse timer then unblocks it (a meta-only write) and the key's next batch blocks it again: hence ${int(a0.decisions)} decisions for ${shape.hotKeys} hot key(s) and the lapse-timer writes in the round trips — what any aggregator catching up on a lag does.`,
      '',
      '## Where an event\'s time goes',
      '',
      `Per-event steps timed in the benchmark's own process on ${int(Math.min(MICRO_SAMPLE, backlog))} backlog records (median of 5 passes, after a warm-up), beside the aggregator's CPU per event (${us(oursCpu)}; the bare consumer's ${us(baseCpu)} is Kafka fetching and record-batch decoding alone):`,
      '',
      '| per-event step | ns/event | share of the aggregator\'s CPU per event |',
      '|---|---:|---:|',
      ...stageRows.map(([n, v]) => `| ${n.trim()} | ${int(v)} | ${((100 * v) / 1000 / oursCpu).toFixed(0)}% |`),
      `| the bare consumer's whole CPU per event (fetch, record-batch decoding; no compression) | ${int(baseCpu * 1000)} | ${((100 * baseCpu) / oursCpu).toFixed(0)}% |`,
      '',
      ...(profile
        ? [
          `V8 CPU profile (node --cpu-prof) of one more aggregator drain after the measured runs, not in the figures above (the profiler slows it): ${int(profile.total / 1000)} ms of samples between its first batch and its last commit, self time by category:`,
          '',
          '| category | share |',
          '|---|---:|',
          ...profile.categories.slice(0, 12).map(([c, t]) => `| ${c} | ${((100 * t) / profile!.total).toFixed(1)}% |`),
          '',
          'Top functions by self time:',
          '',
          '| function | share |',
          '|---|---:|',
          ...profile.functions.map(([f, t]) => `| \`${f.replace(/\|/g, '\\|')}\` | ${((100 * t) / profile!.total).toFixed(1)}% |`),
          '',
        ]
        : ['(Run without `--no-cpu-prof` for a V8 profile of a drain by category.)', '']),
      `What would make it faster: ${faster}`,
      '',
      '## Replay',
      '',
      `In each run, after the two drains, \`quotaflow replay\` reads the same backlog from the beginning in a child process, as the command does (plan the ranges, join a throwaway group, fold with the aggregator's own counter code, events/s from its start to its end, group join included): ` +
        `**--dry-run** folds only (what a what-if costs before its comparison); **--rebuild** (first run only) folds, then writes every counter and fence into an empty Redis key prefix in fenced writes of 500 tenants. Both counted all ${int(backlog)} events in every run; they are in the table above, as a ratio to the aggregator draining the same backlog in the same run.`,
      '',
      `What would make it faster: the replay runs the aggregator's per-event work (decode, resolve, fold) on one thread with nothing to wait for, ${us(m(runs.map((r) => (r.dryRun.cpuMs * 1000) / r.dryRun.events)))} of CPU per event, so it is CPU-bound where the aggregator also waits on Redis per batch; partitions are independent, so folding them in worker threads would scale it with cores, and the decode and resolve levers above apply to it as well.`,
      '',
      ...(memory.length
        ? [
          `## Memory at ${memory.map((x) => int(x.n)).join(' and ')} counters`,
          '',
          `A counter is one counter key of the same rule (${windowsPerCounter} windows, ${int(shape.minuteLimit)} per 60 s and ${int(shape.hourLimit)} per 1 h), one API key each, with one admitted event (none near a limit). Two ways, each in a fresh child process${skipped.length ? ` (this run leaves out ${skipped.map(int).join(' and ')}, which the default run measures)` : ''}:`,
          '',
          `- **an Aggregator** (sizes up to ${int(sizes.drainUpTo)}): a backlog of N usage events, one for each of N new API keys, event times over the last minute, in its own topic of ${USAGE_PARTITIONS} partitions; ` +
            'a real Aggregator drains it against the real Kafka and Redis (new group, new Redis key prefix, so every event loads, creates and writes a new counter) and stops. ' +
            'Heap (heapUsed), heap + ArrayBuffers and RSS are read after two GCs before the consumer starts and after the drain (RSS also holds the consumer\'s fetch buffers and the heap\'s headroom after a drain); "held" is what dropping the stopped Aggregator\'s per-partition state frees (as in the drain section). ' +
            'Redis: INFO used_memory before and after the drain (one bucket field of each size per counter, plus its tenant\'s fence hash); the run\'s keys are then removed, and lazily freed, before the next. ' +
            `Backlogs produced in ${memory.filter((x) => x.produced).map((x) => `${(x.produced!.ms / 1000).toFixed(1)} s (${int(x.n)})`).join(', ') || '—'}, not measured.`,
          `- **built alone** (every size): the same N counters built the way the aggregator builds them when it loads a tenant it does not hold (resolve, \`new CounterState\`, one admitted event, a tenant entry with its fence and counters Map, in a Map by tenant key), with no Kafka, Redis or Aggregator around them; heap + ArrayBuffers and RSS growth after two GCs; then, at ${int(sizes.memoryCounters[0]!)} only (its size does not depend on how many), after dropping them, N bare RollingCounters. ` +
            (largestDrained
              ? `Where both ran (${int(largestDrained.n)}), the Aggregator held ${ratio(median(largestDrained.drains.map((d) => d.result.retained! / largestDrained.n)), median(largestDrained.alone.map((a) => a.counterState)))} what the same counters take built alone` +
                (memory.some((x) => !x.drains.length)
                  ? '; so above that size the built-alone figure stands for the aggregator\'s, and no Aggregator or Redis figure is given (`--drain-up-to 1000000` drains 1,000,000 through an Aggregator too: a few more minutes on 2 cores, Redis ~0.5 GiB more). ' +
                    `Sizes above it run ${sizes.aloneRuns === 1 ? 'once' : `${sizes.aloneRuns} times`}, to stay in the time budget (building 1,000,000 takes about half a minute); ${largestDrained.alone.length > 1 ? `at ${int(largestDrained.n)}, the built-alone figure of its ${largestDrained.alone.length} runs spread over ${spreadShare(largestDrained.alone.map((a) => a.counterState))}` : 'one run there too, so no spread to compare'}.`
                  : '.')
              : 'No size was drained through an Aggregator in this run (`--drain-up-to`).'),
          '',
          ...mdTable(memoryFigures, 'note'),
          '',
        ]
        : []),
      `What would make it smaller: ${smaller}`,
      '',
    ];
    const shown = writeReport(outFile, report);
    process.stdout.write(`What would make it faster: ${faster}\n\nWhat would make it smaller: ${smaller}\n\nWrote ${shown} (${elapsedS(info).toFixed(0)} s).\n`);
    return 0;
  } finally {
    ui.update('stopping the consumers and the services…');
    if (running) {
      const c = running;
      c.kill('SIGTERM');
      await Promise.race([new Promise((r) => c.once('exit', r)), sleep(15_000)]);
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    if (stack.redis.source === 'external') await cleanRedis(redis, redisPrefix).catch((e) => logger('bench').warn('removing the benchmark\'s Redis keys failed', { error: e }));
    redis.disconnect();
    if (stack.kafka.source === 'external') {
      if (topicsCreated.length) await admin.deleteTopics({ topics: topicsCreated }).catch((e) => logger('bench').warn('deleting the benchmark\'s topics failed', { error: e }));
      if (groups.length) await admin.deleteGroups(groups).catch((e) => logger('bench').warn('deleting the benchmark\'s consumer groups failed', { error: e }));
    }
    await admin.disconnect().catch(() => {});
    await stack.stop();
    ui.done();
  }
}

if (process.argv.includes('--child')) void child();
else runMain('aggregator', main);
