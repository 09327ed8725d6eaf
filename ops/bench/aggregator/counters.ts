/**
 * Counters built alone: `n` counters the way the aggregator builds them when it loads a tenant it
 * does not hold, with no Kafka, Redis or Aggregator around them, in a child's own heap.
 */
import { constants as perfConstants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { CounterState, type DecisionContext, type Effects } from '../../../src/fold/counter-state.ts';
import { resolve, type CompiledPolicy } from '../../../src/policy/index.ts';
import { CounterLayout, RollingCounter, windowSpec } from '../../../src/windows/index.ts';
import { collect } from '../common/memory.ts';
import { memoryEvent } from './backlog.ts';

/** Per counter, `n` counters built without Kafka, Redis or an Aggregator around them. */
export interface CounterBytes {
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

export async function counterBytes(policy: CompiledPolicy, n: number, runId: string, withRings: boolean): Promise<CounterBytes> {
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
  const major = gcs.filter(
    (e) =>
      e.startTime >= b0 &&
      e.startTime < b1 &&
      (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR,
  );
  const build = {
    buildMs: b1 - b0,
    majorGcs: major.length,
    majorGcMs: major.reduce((t, e) => t + e.duration, 0),
    longestGcMs: Math.max(0, ...major.map((e) => e.duration)),
  };
  let m1 = measure();
  if (tenants.size !== n || effects.decisions.length) throw new Error(`built ${tenants.size} counters of ${n} (${effects.decisions.length} decisions)`);
  const counterState = { counterState: (m1.all - m0.all) / n, counterStateHeap: (m1.heap - m0.heap) / n, counterStateRss: (m1.rss - m0.rss) / n };
  tenants = undefined;
  if (!withRings) return { n, ...counterState, ...build, rollingCounter: undefined };

  const rule = policy.rules[0]!;
  const layout = new CounterLayout(rule.limits.map((l) => windowSpec(l.windowMs, { bucketMs: l.bucketMs, kind: l.kind })));
  m0 = measure();
  const rings = Array.from({ length: n }, () => new RollingCounter(layout));
  m1 = measure();
  if (rings.length !== n) throw new Error('unreachable');
  return { n, ...counterState, ...build, rollingCounter: (m1.all - m0.all) / n };
}
