/**
 * Section 1: check() throughput on one core, allowed and refused paths, with the gateway's emitter
 * sending every usage event to Kafka on the same event loop; per-check p50/p99; memory per cached block.
 */
import type { Progress } from '../../../src/cli/ui.ts';
import type { Decision } from '../../../src/events/index.ts';
import { DecisionCache } from '../../../src/gateway/decision-cache.ts';
import type { CheckRequest, Gateway } from '../../../src/gateway/gateway.ts';
import type { CompiledPolicy } from '../../../src/policy/index.ts';
import { checkAbort } from '../common/cli.ts';
import { bytes, int, mdTable, median, pct, perSec, ratio, type Figure } from '../common/figures.ts';

const num = (x: number) => (x >= 100 ? int(x) : x.toFixed(1));
import { collect } from '../common/memory.ts';
import { sleep, until } from '../common/wait.ts';
import type { GatewayBench } from './fleet.ts';
import { dur } from './format.ts';
import type { Sizes } from './options.ts';
import type { PeerSummary } from './peers.ts';
import { blockDecision, resolved } from './policy.ts';

export const SECTION = '1. checks/s, one core';

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
  /** Requests per Kafka record, and bytes of record value per request (before gzip). */
  requestsPerRecord: number;
  bytesPerRequest: number;
}

interface MemoryRun {
  perBlock: number;
  /** The least a cache could hold: Map<counterKey, until>. */
  minimalPerBlock: number;
  keyLength: number;
}

export interface ChecksResult {
  allowed: CheckRun[];
  /** The allowed path on a few hot keys, where identical requests coalesce. */
  hot: CheckRun[];
  refused: CheckRun[];
  memory: MemoryRun[];
  /** What reading the timer costs, ms: the floor under p50. */
  timerMs: number;
}

/** Keys of the hot-key mix: the allowed path on these few, where identical requests coalesce. */
export const HOT_KEYS = 10;

const LAT_CAPACITY = 1 << 21;
const latencies = new Float64Array(LAT_CAPACITY);
let sink = 0;
const tick = () => new Promise<void>((r) => setImmediate(r));

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
  const { sent: sent0, records: records0, bytes: bytes0 } = emitter.stats;
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
      ui.update(
        `${label}  ${int(n)} checks  ${perSec((n * 1000) / (prev - t0))} sustained, ${perSec((n * 1000) / busy)} in check()  (${int(emitter.buffered)} events waiting for Kafka)`,
      );
    }
  }
  // The run ends when every usage event it produced is in Kafka.
  const w0 = performance.now();
  await until(() => emitter.buffered === 0, 60_000, 'the emitter to send every usage event', 1);
  waited += performance.now() - w0;
  const elapsed = performance.now() - t0;
  const busyShare = performance.eventLoopUtilization(elu0).utilization;
  if (expectAllowed ? allowed !== n : allowed !== 0)
    throw new Error(`${label}: ${allowed} of ${n} checks were allowed, expected ${expectAllowed ? 'all' : 'none'}`);
  const lat = latencies.subarray(0, Math.min(n, LAT_CAPACITY)).sort();
  return {
    sustained: (n * 1000) / elapsed,
    checkOnly: (n * 1000) / busy,
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    checks: n,
    dropped: emitter.stats.dropped - dropped0,
    waitedShare: waited / elapsed,
    busyShare,
    requestsPerRecord: (emitter.stats.sent - sent0) / Math.max(1, emitter.stats.records - records0),
    bytesPerRequest: (emitter.stats.bytes - bytes0) / Math.max(1, emitter.stats.sent - sent0),
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

/** Heap growth per block after folding `n` block decisions (parsed from their JSON, as the feed does). */
function memoryPerBlock(policy: CompiledPolicy, n: number, runId: string): MemoryRun {
  const now = Date.now();
  const records: string[] = [];
  for (let i = 0; i < n; i++) {
    records.push(
      JSON.stringify(
        blockDecision(resolved(policy, { api: 'Roomy', subjects: { api_key: `mem-${runId}-${String(i).padStart(6, '0')}` } }), now, now + 3_600_000),
      ),
    );
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

/** Section 1 on one gateway: its setup and warm-up, then `run(r)` for each run (between which the peers take their turn). */
export async function startChecks(bench: GatewayBench) {
  const { sizes, ui, runId, policy } = bench;
  const prefix = await bench.services.newTopics('checks');
  ui.update('[1/4] starting a gateway (emitter connected to Kafka)…');
  const gw = await bench.gateway(prefix, `bench-checks-${runId}`);
  const allowedRequests: CheckRequest[] = Array.from({ length: sizes.keys }, (_, i) => ({ api: 'Roomy', subjects: { api_key: `ok-${runId}-${i}` } }));
  const refusedRequests: CheckRequest[] = Array.from({ length: sizes.keys }, (_, i) => ({ api: 'Roomy', subjects: { api_key: `no-${runId}-${i}` } }));
  const hotRequests: CheckRequest[] = Array.from({ length: HOT_KEYS }, (_, i) => ({ api: 'Roomy', subjects: { api_key: `hot-${runId}-${i}` } }));
  const now = Date.now();
  for (const req of refusedRequests) gw.cache.apply(blockDecision(resolved(policy, req), now, now + 3_600_000), now);
  const result: ChecksResult = { allowed: [], hot: [], refused: [], memory: [], timerMs: timerOverheadMs() };
  ui.update('[1/4] warming up the JIT…');
  await checkLoop(gw, allowedRequests, sizes.warmupMs, true, ui, '[1/4] warm-up, allowed path');
  await checkLoop(gw, refusedRequests, sizes.warmupMs, false, ui, '[1/4] warm-up, refused path');
  return {
    result,
    async run(r: number): Promise<void> {
      result.allowed.push(await checkLoop(gw, allowedRequests, sizes.checkMs, true, ui, `[1/4] run ${r + 1}/${sizes.runs}, allowed path:`));
      result.hot.push(await checkLoop(gw, hotRequests, sizes.checkMs, true, ui, `[1/4] run ${r + 1}/${sizes.runs}, hot keys:`));
      result.refused.push(await checkLoop(gw, refusedRequests, sizes.checkMs, false, ui, `[1/4] run ${r + 1}/${sizes.runs}, refused path:`));
      ui.update(`[1/4] run ${r + 1}/${sizes.runs}: memory per cached block (${int(sizes.memoryBlocks)} block decisions)…`);
      result.memory.push(memoryPerBlock(policy, sizes.memoryBlocks, `${runId}-${r}`));
      if (sink === 42) process.stderr.write('\n');
    },
  };
}

export function checksFigures(c: ChecksResult, peers: PeerSummary): Figure[] {
  const memory = median(c.memory.map((m) => m.perBlock));
  const minimal = median(c.memory.map((m) => m.minimalPerBlock));
  const sustained = (runs: CheckRun[]) => runs.map((r) => r.sustained);
  const checkOnly = (runs: CheckRun[]) => runs.map((r) => r.checkOnly);
  return [
    {
      section: SECTION,
      name: 'allowed path: checks/s, every event sent to Kafka',
      values: sustained(c.allowed),
      fmt: perSec,
      vs: peers.vsRate(sustained(c.allowed)),
    },
    { section: SECTION, name: 'allowed path: checks/s inside check() only', values: checkOnly(c.allowed), fmt: perSec, vs: peers.vsRate(checkOnly(c.allowed)) },
    { section: SECTION, name: 'allowed path: p50 per check', values: c.allowed.map((r) => r.p50), fmt: dur, vs: peers.vsTrip },
    { section: SECTION, name: 'allowed path: p99 per check', values: c.allowed.map((r) => r.p99), fmt: dur },
    { section: SECTION, name: 'allowed path: requests per Kafka record', values: c.allowed.map((r) => r.requestsPerRecord), fmt: num },
    { section: SECTION, name: 'allowed path: bytes per request (before gzip)', values: c.allowed.map((r) => r.bytesPerRequest), fmt: num },
    {
      section: SECTION,
      name: `hot keys (${HOT_KEYS}): checks/s, every event sent to Kafka`,
      values: sustained(c.hot),
      fmt: perSec,
      vs: peers.vsRate(sustained(c.hot)),
    },
    { section: SECTION, name: `hot keys (${HOT_KEYS}): requests per Kafka record`, values: c.hot.map((r) => r.requestsPerRecord), fmt: num },
    { section: SECTION, name: `hot keys (${HOT_KEYS}): bytes per request (before gzip)`, values: c.hot.map((r) => r.bytesPerRequest), fmt: num },
    {
      section: SECTION,
      name: 'refused path: checks/s, every event sent to Kafka',
      values: sustained(c.refused),
      fmt: perSec,
      vs: peers.vsRate(sustained(c.refused)),
    },
    { section: SECTION, name: 'refused path: checks/s inside check() only', values: checkOnly(c.refused), fmt: perSec, vs: peers.vsRate(checkOnly(c.refused)) },
    { section: SECTION, name: 'refused path: p50 per check', values: c.refused.map((r) => r.p50), fmt: dur, vs: peers.vsTrip },
    { section: SECTION, name: 'refused path: p99 per check', values: c.refused.map((r) => r.p99), fmt: dur },
    {
      section: SECTION,
      name: 'memory per cached block',
      values: c.memory.map((m) => m.perBlock),
      fmt: bytes,
      vs: `${ratio(memory, minimal)} a bare Map<counterKey, until> (${bytes(minimal)})`,
    },
  ];
}

export function checksReport(c: ChecksResult, figures: readonly Figure[], sizes: Sizes, client: string): string[] {
  const checkOnly = median(c.allowed.map((r) => r.checkOnly));
  const sustained = median(c.allowed.map((r) => r.sustained));
  const waited = median(c.allowed.map((r) => r.waitedShare));
  const busy = median(c.allowed.map((r) => r.busyShare));
  const memory = median(c.memory.map((m) => m.perBlock));
  const minimal = median(c.memory.map((m) => m.minimalPerBlock));
  const drops = c.allowed.concat(c.refused).reduce((n, r) => n + r.dropped, 0);
  // Main-thread time per event spent sending it: the busy time per check beyond check() itself.
  const sendUs = (busy * 1e6) / sustained - 1e6 / checkOnly;
  const perRecord = median(c.allowed.map((r) => r.requestsPerRecord));
  const faster =
    sustained < checkOnly * 0.7 && perRecord >= 10
      ? `events travel ${int(perRecord)} requests to a Kafka record, so what is left per event sent is about ${dur(sendUs / 1000)} of main-thread work (coalescing, writing the event into its batch's JSON, the send) beside ${dur(1000 / checkOnly)} in check() itself: a check() that allocates nothing on the admitted path (the resolution and its key strings, the headers object, the usage event and its subjects) and an emitter that writes each event's JSON once, at enqueue, into a per-partition buffer would raise it`
      : sustained < checkOnly * 0.7
        ? busy > 0.8
          ? `sending bounds it: check() alone does ${perSec(checkOnly)} (${dur(1000 / checkOnly)} each on average), but with the emitter on the same core the event loop was busy ${(busy * 100).toFixed(0)}% of the run and events reach Kafka at ${perSec(sustained)} — about ${dur(sendUs / 1000)} of main-thread work per event sent (JSON.stringify, then ${client}'s per-record partitioning and encoding), so fewer, larger Kafka records (several usage events per record, or coalescing repeated keys) would raise it before any change to check()`
          : `sending bounds it and the process waits rather than computes: check() alone does ${perSec(checkOnly)}, events reach Kafka at ${perSec(sustained)}, and the event loop was busy only ${(busy * 100).toFixed(0)}% of the run — one 2,000-event produce (gzip, acks=all) in flight at a time, so larger batches or more sends in flight would raise it before any change to check()`
        : `check() itself bounds it (${perSec(checkOnly)} in check(), ${perSec(sustained)} with sending); fewer allocations per check (the headers object, the subjects of each usage event, a second local count for the headers) would raise it`;
  const smaller =
    memory < minimal * 1.3
      ? `a cached block (${bytes(memory)}) costs about what a bare Map<counterKey, until> does (${bytes(minimal)}): the ${c.memory[0]!.keyLength}-character counter key and the Map entry dominate, so a shorter key (e.g. a 64-bit hash of it) is what would make it smaller`
      : `a cached block costs ${bytes(memory)} against ${bytes(minimal)} for a bare Map<counterKey, until>: keeping only the key, until and windowMs (rule and window strings shared) would bring it near that`;
  return [
    '## 1. Checks per second on one core',
    '',
    `One Gateway on the real policy path (resolve, decision cache, local counts, admitted headers or the refusal body), over ${int(sizes.keys)} API keys, each check queuing its usage event; the gateway's emitter sends them to the real Kafka (batches of up to 2,000, gzip, acks=all) on the same event loop, between chunks of 512 checks (gzip itself runs on libuv's thread pool). ` +
      `"every event sent to Kafka" counts until the last event is acknowledged; when more than 40,000 events wait, the loop waits for the emitter (${(waited * 100).toFixed(0)}% of the allowed-path run; ${int(drops)} events dropped). ` +
      `"inside check() only" counts the time in the loop alone. p50/p99 are per check, between consecutive timestamps (the timer costs ≈ ${dur(c.timerMs)}). ` +
      `Refused path: ${int(sizes.keys)} other keys, each with a live block in the cache. Memory: heap growth after folding ${int(sizes.memoryBlocks)} block decisions, parsed from JSON as the feed does, into a DecisionCache, per block, beside the same keys in a bare Map<counterKey, until> (the least a cache could hold).`,
    '',
    ...mdTable(figures),
    '',
    `What would make it faster/smaller: ${faster}; ${smaller}.`,
    '',
  ];
}
