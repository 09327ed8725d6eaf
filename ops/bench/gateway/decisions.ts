/**
 * Section 3: decision latency. The check that reaches a limit on one gateway → a block in the cache
 * of every gateway, through one in-process aggregator, timed in three stages.
 */
import type { Decision } from '../../../src/events/index.ts';
import type { CheckRequest, Gateway } from '../../../src/gateway/gateway.ts';
import { checkAbort } from '../common/cli.ts';
import { mdTable, median, pct, type Figure } from '../common/figures.ts';
import { sleep, until } from '../common/wait.ts';
import type { GatewayBench, Pipeline } from './fleet.ts';
import { dur, polled } from './format.ts';
import type { Sizes } from './options.ts';
import { resolved } from './policy.ts';

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

async function decisionRun(bench: GatewayBench, pipeline: Pipeline, gateways: Gateway[], run: number): Promise<DecisionRun> {
  const { sizes, ui } = bench;
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
      const request: CheckRequest = { api: 'Tight', subjects: { api_key: `dl-${bench.runId}-${run}-${i}` } };
      const r = resolved(bench.policy, request);
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
    p50: pct(total, 50),
    p95: pct(total, 95),
    p99: pct(total, 99),
    toKafka: stage(all, toKafka),
    toDecision: stage(all, toDecision),
    toCaches: stage(all, toCaches),
    firstToLast: stage(all, (c) => Math.max(...(c.seenAt as number[])) - Math.min(...(c.seenAt as number[]))),
    tail: [stage(slow, toKafka), stage(slow, toDecision), stage(slow, toCaches)],
  };
}

/** Starts the aggregator (kept for section 4) and the section's gateways, probes them, then times every run. */
export async function measureDecisions(bench: GatewayBench): Promise<{ pipeline: Pipeline; runs: DecisionRun[] }> {
  const { sizes, ui } = bench;
  ui.update('[3/4] starting the aggregator and the gateways…');
  const pipeline = await bench.pipeline();
  const gateways = await bench.gateways(sizes.decisionGateways, pipeline, 'dl', '[3/4] starting the gateways, each with its own decision feed:');
  ui.update('[3/4] probing: one block through the aggregator to every gateway…');
  await bench.probe(gateways[0]!, gateways, 'dl');
  const runs: DecisionRun[] = [];
  for (let run = 0; run < sizes.runs; run++) runs.push(await decisionRun(bench, pipeline, gateways, run));
  await bench.stopGateways();
  return { pipeline, runs };
}

/** The medians over the runs, and the stage that takes the most (section 4 names it too). */
export function decisionSummary(runs: DecisionRun[]) {
  const m = (f: (r: DecisionRun) => number) => median(runs.map(f));
  const summary = { p50: m((r) => r.p50), toKafka: m((r) => r.toKafka), toDecision: m((r) => r.toDecision), toCaches: m((r) => r.toCaches) };
  const stages: Array<[string, number]> = [
    ['the gateway → Kafka hop (emitter linger, then a produce with acks=all)', summary.toKafka],
    ['the aggregator (fetch of the usage batch, Redis load, fold, publish)', summary.toDecision],
    ["the decision → gateway hop (produce with acks=all, then each feed's fetch)", summary.toCaches],
  ];
  const tail = [0, 1, 2].map((i) => m((r) => r.tail[i]!));
  return { ...summary, stages, dominant: stages.reduce((x, y) => (y[1] > x[1] ? y : x)), tail, tailIndex: tail.indexOf(Math.max(...tail)) };
}

export type DecisionSummary = ReturnType<typeof decisionSummary>;

export function decisionFigures(runs: DecisionRun[], sizes: Sizes): Figure[] {
  const section = `3. decision latency, ${sizes.decisionGateways} gateways`;
  return [
    { section, name: 'crossing → block in every cache, p50', values: runs.map((r) => r.p50), fmt: polled },
    { section, name: 'crossing → block in every cache, p95', values: runs.map((r) => r.p95), fmt: polled },
    { section, name: 'crossing → block in every cache, p99', values: runs.map((r) => r.p99), fmt: polled },
    { section, name: 'stage: gateway → Kafka (linger + produce), median', values: runs.map((r) => r.toKafka), fmt: dur },
    { section, name: 'stage: Kafka → aggregator decision, median', values: runs.map((r) => r.toDecision), fmt: dur },
    { section, name: 'stage: decision → last gateway cache, median', values: runs.map((r) => r.toCaches), fmt: polled },
    { section, name: 'first → last gateway to cache it, median', values: runs.map((r) => r.firstToLast), fmt: polled },
  ];
}

export function decisionReport(d: DecisionSummary, figures: readonly Figure[], sizes: Sizes, client: string): string[] {
  const [gatewayHop, aggregatorHop] = d.stages;
  return [
    `## 3. Decision latency (${sizes.decisionGateways} gateways, one aggregator)`,
    '',
    `A gateway makes the check that reaches a limit (3 per 60 s: the 3rd check is the crossing); the clock starts when that check returns and stops when every one of ${sizes.decisionGateways} Gateway instances (each with its own decision feed, its own consumer group) has the block in its cache, polled every 1 ms (so "< 1 ms" is below what the poll can tell). ` +
      `${sizes.decisionSamples} crossings per run, each on a new key, one every ${sizes.decisionEveryMs} ms; one in-process Aggregator on the real Redis; default settings (emitter linger 10 ms, ${client} fetch defaults). ` +
      'Stages: until Kafka acknowledges the usage batch holding the crossing; until the aggregator emits the block; until the last gateway caches it.',
    '',
    ...mdTable(figures),
    '',
    `What dominates: ${d.dominant[0]}, ${dur(d.dominant[1])} of the ${dur(d.p50)} median (gateway → Kafka ${dur(d.toKafka)}, aggregator ${dur(d.toDecision)}, decision → caches ${dur(d.toCaches)}); ` +
      `in the slowest 5% it is ${d.stages[d.tailIndex]![0].replace(/ \(.*\)$/, '')} (${dur(d.tail[0]!)}, ${dur(d.tail[1]!)}, ${dur(d.tail[2]!)} for the three stages).`,
    '',
    `What would make it faster: ${
      d.dominant === gatewayHop
        ? 'a shorter emitter linger, or sending at once an event that takes a key near its limit (the gateway knows its own count), and acks=1 for usage events'
        : d.dominant === aggregatorHop
          ? "a shorter fetch wait and smaller batches on the aggregator's consumer, and publishing decisions before the Redis write"
          : `a shorter fetch wait${client === 'kafkajs' ? ' (maxWaitTimeInMs)' : ''} on the gateways' decision feeds, and acks=1 for decisions`
    }.`,
    '',
  ];
}
