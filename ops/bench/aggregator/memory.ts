/**
 * Memory per counter at scale: N counters held by a real Aggregator draining one event for each of
 * N new keys (sizes up to --drain-up-to), and the same N counters built alone (counters.ts), each
 * in a fresh child process.
 */
import { topicNames } from '../../../src/kafka/topics.ts';
import { bytes, int, mdTable, median, mib, perSec, type Figure } from '../common/figures.ts';
import { freeRedis, redisInfo } from '../common/redis.ts';
import { USAGE_PARTITIONS } from '../common/services.ts';
import { memoryEvent, produceBacklog, type Produced } from './backlog.ts';
import type { CounterBytes } from './counters.ts';
import { fixed, ratio } from './format.ts';
import { FULL } from './options.ts';
import { runChild, taskBase, type AggregatorBench, type DrainResult } from './tasks.ts';
import { eps, heapAbPer, heapPer, rssPer, type RunResult } from './throughput.ts';

export interface MemoryResult {
  /** Counters: one new key per event. */
  n: number;
  /** The backlog, when an Aggregator drains this size. */
  produced?: Produced;
  drains: Array<{ result: DrainResult; redisBytes: number | undefined }>;
  alone: CounterBytes[];
}

const heldPer = (d: DrainResult, n: number) => d.retained! / n;

export async function measureMemory(bench: AggregatorBench): Promise<MemoryResult[]> {
  const { services, sizes, ui } = bench;
  const measureRedis = services.stack.redis.source !== 'external';
  const memory: MemoryResult[] = [];
  for (const n of sizes.memoryCounters) {
    const tag = `[memory, ${int(n)} counters]`;
    const drained = n <= sizes.drainUpTo;
    const t0 = Date.now();
    const result: MemoryResult = { n, drains: [], alone: [] };
    memory.push(result);
    const prefix = drained ? await services.newTopics(`mem${n}`) : '';
    if (drained) {
      result.produced = await produceBacklog(
        services.kafka,
        topicNames(prefix).usage,
        n,
        (k, start) => memoryEvent(services.runId, n, k, start),
        bench.policy,
        ui,
        `${tag} producing one event for each of ${int(n)} new keys`,
      );
    }
    const runsHere = drained ? sizes.memoryRuns : sizes.aloneRuns;
    for (let r = 0; r < runsHere; r++) {
      const run = `run ${r + 1}/${runsHere}`;
      if (drained) {
        const keyPrefix = `${services.redisPrefix}m${n}-${r}:`;
        const groupId = services.group(`mem${n}-${r}`);
        const info0 = measureRedis ? await redisInfo(services.redis) : undefined;
        const d = await runChild(
          {
            role: 'aggregator',
            ...taskBase(bench),
            redisUrl: services.stack.redisUrl,
            keyPrefix,
            topicPrefix: prefix,
            groupId,
            expected: n,
          },
          `${tag} ${run}: an Aggregator draining them`,
          ui,
        );
        const info1 = info0 && (await redisInfo(services.redis));
        const a = d.agg!;
        if (a.counted !== n || a.late || a.dlq)
          throw new Error(`${tag} the aggregator counted ${a.counted} of ${n} events (${a.late} late, ${a.dlq} to the DLQ)`);
        ui.update(`${tag} ${run}: removing its ${int(2 * n)} Redis keys…`);
        await freeRedis(services.redis, keyPrefix);
        result.drains.push({ result: d, redisBytes: info0 && info1 ? info1.usedMemory - info0.usedMemory : undefined });
      }
      // A bare RollingCounter's size does not depend on how many there are: measured at the first size only.
      const withRings = n === sizes.memoryCounters[0];
      result.alone.push(
        await runChild({ role: 'counters', ...taskBase(bench), n, withRings, runId: services.runId }, `${tag} ${run}: the same counters built alone`, ui),
      );
    }
    const alone = median(result.alone.map((a) => a.counterState));
    const held = result.drains.length ? `held by an Aggregator ${bytes(median(result.drains.map((d) => heldPer(d.result, n))))} per counter, ` : '';
    ui.done(
      `${tag} ${held}built alone ${bytes(alone)} (built in ${(median(result.alone.map((a) => a.buildMs)) / 1000).toFixed(1)} s); ${((Date.now() - t0) / 1000).toFixed(0)} s in all`,
    );
  }
  return memory;
}

export function memoryFigures(memory: MemoryResult[]): Figure[] {
  return memory.flatMap(({ n, drains: ds, alone: as }) => {
    const at = `${int(n)} counters`;
    const redisDrains = ds.filter((d) => d.redisBytes !== undefined);
    const drained: Figure[] = ds.length
      ? [
          {
            name: `${at}, an Aggregator: held by its counters and tenants, per counter`,
            values: ds.map((d) => heldPer(d.result, n)),
            fmt: bytes,
            vs: `${ratio(median(ds.map((d) => heldPer(d.result, n))), median(as.map((a) => a.counterState)))} the same counters built alone`,
          },
          {
            name: `${at}, an Aggregator: heap growth per counter`,
            values: ds.map((d) => heapPer(d.result, n)),
            fmt: bytes,
            vs: `heap after: ${mib(median(ds.map((d) => d.result.after.heap)))}`,
          },
          { name: `${at}, an Aggregator: heap + ArrayBuffers growth per counter`, values: ds.map((d) => heapAbPer(d.result, n)), fmt: bytes },
          {
            name: `${at}, an Aggregator: RSS growth per counter`,
            values: ds.map((d) => rssPer(d.result, n)),
            fmt: bytes,
            vs: `RSS after: ${mib(median(ds.map((d) => d.result.after.rss)))}`,
          },
          ...(redisDrains.length
            ? [
                {
                  name: `${at}, Redis: memory per counter`,
                  values: redisDrains.map((d) => d.redisBytes! / n),
                  fmt: bytes,
                  vs: `used_memory +${mib(median(redisDrains.map((d) => d.redisBytes!)))}`,
                },
              ]
            : []),
          {
            name: `${at}, an Aggregator: drain events/s (each event a new counter)`,
            values: ds.map((d) => eps(d.result)),
            fmt: perSec,
            vs: `${fixed(2)(median(ds.map((d) => d.result.agg!.storeRoundTrips / d.result.agg!.batches)))} Redis round trips per batch`,
          },
        ]
      : [];
    return [
      ...drained,
      {
        name: `${at}, built alone: CounterState, tenant entry and keys, per counter`,
        values: as.map((a) => a.counterState),
        fmt: bytes,
        vs: `${bytes(median(as.map((a) => a.counterStateHeap)))} of it on the heap${ds.length ? '' : '; no Aggregator drained this size'}`,
      },
      { name: `${at}, built alone: RSS growth per counter`, values: as.map((a) => a.counterStateRss), fmt: bytes },
      {
        name: `${at}, built alone: time to build them`,
        values: as.map((a) => a.buildMs),
        fmt: (x) => `${(x / 1000).toFixed(1)} s`,
        vs: `of it, ${int(median(as.map((a) => a.majorGcs)))} full GCs: ${int(median(as.map((a) => a.majorGcMs)))} ms, the longest ${int(median(as.map((a) => a.longestGcMs)))} ms`,
      },
      ...(as.some((a) => a.rollingCounter !== undefined)
        ? [
            {
              name: `${at}, built alone: a bare RollingCounter`,
              values: as.map((a) => a.rollingCounter!),
              fmt: bytes,
              vs: 'its bucket rings: the least a counter could take, at any size',
            },
          ]
        : []),
    ];
  });
}

/** What would make a counter smaller: at the most counters measured (else the drain's), what it holds beyond its rings. */
export function smallerAdvice(memory: MemoryResult[], runs: RunResult[], alone: CounterBytes, bench: AggregatorBench): string {
  const counters = bench.sizes.keys;
  const largest = memory[memory.length - 1];
  const largestDrained = memory.filter((x) => x.drains.length).pop();
  const heldAt = !largest
    ? `${bytes(median(runs.map((r) => heldPer(r.ours, counters))))} in the Aggregator`
    : largest.drains.length
      ? `${bytes(median(largest.drains.map((d) => heldPer(d.result, largest.n))))} in the Aggregator`
      : `${bytes(median(largest.alone.map((a) => a.counterState)))} (built alone as the aggregator builds it)`;
  const ringAt = memory.length ? median(memory[0]!.alone.map((a) => a.rollingCounter!)) : alone.rollingCounter!;
  const redisSparse = largestDrained?.drains.filter((d) => d.redisBytes !== undefined).map((d) => d.redisBytes! / largestDrained.n) ?? [];
  const redisBusy = runs.filter((r) => r.redis !== undefined).map((r) => r.redis!.memory / counters);
  return (
    `at ${int(largest?.n ?? counters)} counters each holds ${heldAt} against ${bytes(ringAt)} for its RollingCounter (the bucket rings) alone; the rest is what surrounds it — ` +
    'the CounterState object and its RollingCounter wrapper (the per-rule arrays are shared and its Maps made on first use), ' +
    'the TenantState and its counters Map (one tenant per counter here), and the key strings (counter key, tenant key, scope key); keeping the rings of many counters in one slab (a counter = an offset) and the keys in a table of their own would bring a counter near its ring bytes' +
    (redisSparse.length && redisBusy.length
      ? `. In Redis a counter takes ${bytes(median(redisSparse))} when one bucket of each size holds a count (the memory section) but ${bytes(median(redisBusy))} with ~${int(bench.shape.perKey)} events over the last minute (the drain section), ` +
        'as its hash gains a field per bucket (up to one per second of the minute window and one per minute of the hour window); keeping each ring as one packed binary field, rather than a hash field per bucket, would shrink a busy counter most'
      : '') +
    (largest
      ? `. Holding them costs time too: building ${int(largest.n)} took ${(median(largest.alone.map((a) => a.buildMs)) / 1000).toFixed(1)} s, ${(median(largest.alone.map((a) => a.majorGcMs)) / 1000).toFixed(1)} s of it in ` +
        `${int(median(largest.alone.map((a) => a.majorGcs)))} full GCs that each mark every live counter's objects, the longest pausing the process for ${int(median(largest.alone.map((a) => a.longestGcMs)))} ms — ` +
        'in an Aggregator, a pause in consuming and deciding; fewer objects per counter (above), or the rings of many counters in one slab, would shorten them'
      : '') +
    '.'
  );
}

export function memoryReport(memory: MemoryResult[], figures: readonly Figure[], smaller: string, bench: AggregatorBench): string[] {
  const { sizes, shape } = bench;
  const windowsPerCounter = bench.policy.rules[0]!.limits.length;
  const skipped = FULL.memoryCounters.filter((n) => !sizes.memoryCounters.includes(n));
  const largestDrained = memory.filter((x) => x.drains.length).pop();
  /** (max − min) / median, as a percentage. */
  const spreadShare = (xs: number[]) => `${((100 * (Math.max(...xs) - Math.min(...xs))) / median(xs)).toFixed(2)}%`;
  const someAloneOnly = memory.some((x) => !x.drains.length);
  const drainedText = largestDrained
    ? `Where both ran (${int(largestDrained.n)}), the Aggregator held ${ratio(median(largestDrained.drains.map((d) => heldPer(d.result, largestDrained.n))), median(largestDrained.alone.map((a) => a.counterState)))} what the same counters take built alone` +
      (someAloneOnly
        ? "; so above that size the built-alone figure stands for the aggregator's, and no Aggregator or Redis figure is given (`--drain-up-to 1000000` drains 1,000,000 through an Aggregator too: a few more minutes on 2 cores, Redis ~0.5 GiB more). " +
          `Sizes above it run ${sizes.aloneRuns === 1 ? 'once' : `${sizes.aloneRuns} times`}, to stay in the time budget (building 1,000,000 takes about half a minute); ${largestDrained.alone.length > 1 ? `at ${int(largestDrained.n)}, the built-alone figure of its ${largestDrained.alone.length} runs spread over ${spreadShare(largestDrained.alone.map((a) => a.counterState))}` : 'one run there too, so no spread to compare'}.`
        : '.')
    : 'No size was drained through an Aggregator in this run (`--drain-up-to`).';
  const section = memory.length
    ? [
        `## Memory at ${memory.map((x) => int(x.n)).join(' and ')} counters`,
        '',
        `A counter is one counter key of the same rule (${windowsPerCounter} windows, ${int(shape.minuteLimit)} per 60 s and ${int(shape.hourLimit)} per 1 h), one API key each, with one admitted event (none near a limit). Two ways, each in a fresh child process${skipped.length ? ` (this run leaves out ${skipped.map(int).join(' and ')}, which the default run measures)` : ''}:`,
        '',
        `- **an Aggregator** (sizes up to ${int(sizes.drainUpTo)}): a backlog of N usage events, one for each of N new API keys, event times over the last minute, in its own topic of ${USAGE_PARTITIONS} partitions; ` +
          'a real Aggregator drains it against the real Kafka and Redis (new group, new Redis key prefix, so every event loads, creates and writes a new counter) and stops. ' +
          "Heap (heapUsed), heap + ArrayBuffers and RSS are read after two GCs before the consumer starts and after the drain (RSS also holds the consumer's fetch buffers and the heap's headroom after a drain); \"held\" is what dropping the stopped Aggregator's per-partition state frees (as in the drain section). " +
          "Redis: INFO used_memory before and after the drain (one bucket field of each size per counter, plus its tenant's fence hash); the run's keys are then removed, and lazily freed, before the next. " +
          `Backlogs produced in ${
            memory
              .filter((x) => x.produced)
              .map((x) => `${(x.produced!.ms / 1000).toFixed(1)} s (${int(x.n)})`)
              .join(', ') || '—'
          }, not measured.`,
        `- **built alone** (every size): the same N counters built the way the aggregator builds them when it loads a tenant it does not hold (resolve, \`new CounterState\`, one admitted event, a tenant entry with its fence and counters Map, in a Map by tenant key), with no Kafka, Redis or Aggregator around them; heap + ArrayBuffers and RSS growth after two GCs; then, at ${int(sizes.memoryCounters[0]!)} only (its size does not depend on how many), after dropping them, N bare RollingCounters. ` +
          drainedText,
        '',
        ...mdTable(figures, 'note'),
        '',
      ]
    : [];
  return [...section, `What would make it smaller: ${smaller}`, ''];
}
