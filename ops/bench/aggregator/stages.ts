/**
 * Where an event's time goes: the per-event steps timed in this process on records of the backlog,
 * beside the aggregator's CPU per event and its profile, and from both what would make it faster.
 */
import { table } from '../../../src/cli/ui.ts';
import { decodeUsageEvent } from '../../../src/events/decode.ts';
import { resolve } from '../../../src/policy/index.ts';
import { int, median } from '../common/figures.ts';
import { usageEvent } from './backlog.ts';
import { PARTITIONS_CONCURRENTLY } from './drain.ts';
import { ms, us } from './format.ts';
import { idleOf, LEVERS, type Profile } from './profile.ts';
import type { AggregatorBench } from './tasks.ts';
import { cpuPerEvent, eps, storeMsPerBatch, type RunResult } from './throughput.ts';

const MICRO_SAMPLE = 20_000;

/** ns per event of the per-event steps, in this process, on records of the backlog. */
interface StageCosts {
  parse: number;
  decode: number;
  resolve: number;
}

/** `start`: when the backlog was produced, so the records are the backlog's own. */
export function stageCosts(bench: AggregatorBench, start: number): StageCosts {
  const { sizes, shape, policy } = bench;
  const n = Math.min(MICRO_SAMPLE, sizes.events);
  const records = Array.from({ length: n }, (_, i) => Buffer.from(JSON.stringify(usageEvent(bench.services.runId, i, sizes, shape, start))));
  const opts = { now: Date.now(), futureSkewMs: 60_000 };
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

const stageRows = (stages: StageCosts): Array<[string, number]> => [
  ['JSON.parse (Buffer → string → object)', stages.parse],
  ['decodeUsageEvent (isUtf8 + JSON.parse + zod safeParse)', stages.decode],
  ['  of which zod and checks (decode − JSON.parse)', stages.decode - stages.parse],
  ['resolve() (rule, subjects, tenant and counter key)', stages.resolve],
];

/** The steps and the profile's categories, for the console. */
export function stageTables(stages: StageCosts, profile: Profile | undefined): string {
  const steps = table(
    ['per-event step, in this process', 'ns/event'],
    stageRows(stages).map(([n, v]) => [n, int(v)]),
  );
  if (!profile) return `${steps}\n\n`;
  const share = (t: number) => `${((100 * t) / profile.total).toFixed(1)}%`;
  return `${steps}\n\n${table(
    ['aggregator CPU profile, self time during the drain', 'share'],
    profile.categories.slice(0, 12).map(([c, t]) => [c, share(t)]),
  )}\n\n`;
}

/** What would make the aggregator faster, from what this run saw. */
export function fasterAdvice(runs: RunResult[], stages: StageCosts, profile: Profile | undefined): string {
  const m = median;
  const oursCpu = m(runs.map((r) => cpuPerEvent(r.ours)));
  const baseCpu = m(runs.map((r) => cpuPerEvent(r.baseline)));
  const busy = m(runs.map((r) => r.ours.cpuMs / r.ours.ms));
  const storeShare = runs.map((r) => (r.ours.agg!.loadMs + r.ours.agg!.applyMs) / PARTITIONS_CONCURRENTLY / r.ours.ms);
  const oursEps = m(runs.map((r) => eps(r.ours)));
  const redisRuns = runs.filter((r) => r.redis !== undefined);
  const decodeUs = stages.decode / 1000;
  const resolveUs = stages.resolve / 1000;
  const foldUs = Math.max(0, oursCpu - baseCpu - decodeUs - resolveUs);
  const redisCpuUs = redisRuns.length ? m(redisRuns.map((r) => (r.redis!.cpuS * 1e6) / r.ours.events)) : NaN;
  const candidates: Array<[number, string]> = [
    [
      decodeUs,
      `decoding (JSON.parse + zod safeParse, ${us(decodeUs)} of the ${us(oursCpu)} CPU per event): a hand-written check for the one hot layout, zod only to explain a rejected event`,
    ],
    [resolveUs, `resolve() per event (${us(resolveUs)}): cache the resolution per (api, subjects) within a batch, which repeats the same keys many times`],
    [foldUs, `the fold and the store write (${us(foldUs)} per event beyond decode and resolve; the profiled drain says which part)`],
  ];
  // On a shared machine CPU time / wall time also drops when others take the cores; the profile's
  // idle share (the event loop waiting on I/O) says whether the process itself was waiting.
  const idleShare = profile ? idleOf(profile) / profile.total : undefined;
  const cpuBound = idleShare !== undefined ? idleShare < 0.25 : busy > 0.75;
  const busyText = `${idleShare !== undefined ? `idle ${(idleShare * 100).toFixed(0)}% of the profiled drain, ` : ''}${(busy * 100).toFixed(0)}% busy (CPU time / wall time), ${us(oursCpu)} CPU per event against ${us(baseCpu)} for the bare consumer`;
  let lever: string;
  if (profile) {
    const shown = profile.categories.filter(([c]) => !c.startsWith('idle') && !c.startsWith('V8 and native')).slice(0, 3);
    const share = (t: number) => `${((100 * t) / profile.total).toFixed(0)}%`;
    lever = `the profile puts ${shown.map(([c, t]) => `${c} ${share(t)}`).join(', ')} on top — ${shown
      .slice(0, 2)
      .map(([c]) => LEVERS.find(([prefix]) => c.startsWith(prefix))?.[1] ?? c)
      .join('; and ')}`;
  } else {
    lever = `the largest share is ${candidates.reduce((x, y) => (y[0] > x[0] ? y : x))[1]}`;
  }
  return (
    (cpuBound
      ? `the aggregator is CPU-bound (${busyText}); ${lever}`
      : `the aggregator is not CPU-bound (${busyText}): it waits on Redis (a store round trip of ${ms(m(storeMsPerBatch(runs)))}, ~${(m(storeShare) * 100).toFixed(0)}% of each partition slot's time), so more partitions in flight or decoding the next batch during the write come first; then ${lever}`) +
    `${Number.isFinite(redisCpuUs) ? `. Redis itself spends ${us(redisCpuUs)} per event (the Lua script), ${((redisCpuUs * oursEps) / 1e4).toFixed(0)}% of a core at this rate: ${(redisCpuUs * oursEps) / 1e6 < 0.5 ? 'not the limit yet' : 'close to being the limit'}` : ''}.`
  );
}

export function stagesReport(runs: RunResult[], stages: StageCosts, profile: Profile | undefined, faster: string, backlog: number): string[] {
  const oursCpu = median(runs.map((r) => cpuPerEvent(r.ours)));
  const baseCpu = median(runs.map((r) => cpuPerEvent(r.baseline)));
  const share = (t: number) => `${((100 * t) / profile!.total).toFixed(1)}%`;
  return [
    "## Where an event's time goes",
    '',
    `Per-event steps timed in the benchmark's own process on ${int(Math.min(MICRO_SAMPLE, backlog))} backlog records (median of 5 passes, after a warm-up), beside the aggregator's CPU per event (${us(oursCpu)}; the bare consumer's ${us(baseCpu)} is Kafka fetching and record-batch decoding alone):`,
    '',
    "| per-event step | ns/event | share of the aggregator's CPU per event |",
    '|---|---:|---:|',
    ...stageRows(stages).map(([n, v]) => `| ${n.trim()} | ${int(v)} | ${((100 * v) / 1000 / oursCpu).toFixed(0)}% |`),
    `| the bare consumer's whole CPU per event (fetch, record-batch decoding; no compression) | ${int(baseCpu * 1000)} | ${((100 * baseCpu) / oursCpu).toFixed(0)}% |`,
    '',
    ...(profile
      ? [
          `V8 CPU profile (node --cpu-prof) of one more aggregator drain after the measured runs, not in the figures above (the profiler slows it): ${int(profile.total / 1000)} ms of samples between its first batch and its last commit, self time by category:`,
          '',
          '| category | share |',
          '|---|---:|',
          ...profile.categories.slice(0, 12).map(([c, t]) => `| ${c} | ${share(t)} |`),
          '',
          'Top functions by self time:',
          '',
          '| function | share |',
          '|---|---:|',
          ...profile.functions.map(([f, t]) => `| \`${f.replace(/\|/g, '\\|')}\` | ${share(t)} |`),
          '',
        ]
      : ['(Run without `--no-cpu-prof` for a V8 profile of a drain by category.)', '']),
    `What would make it faster: ${faster}`,
    '',
  ];
}
