/** The aggregator benchmark's command line and its sizes, full and --quick. */
import { join, resolve as resolvePath } from 'node:path';
import type { KafkaClientName } from '../../../src/kafka/port.ts';
import { benchArgs, kafkaClientHelp, kafkaClientOption, LOGS_HELP, SERVICES_HELP, wholeNumber } from '../common/cli.ts';
import { int } from '../common/figures.ts';
import { RESULTS_DIR } from '../common/report.ts';

const HELP = `Usage: npx tsx ops/bench/aggregator/main.ts [--quick] [--runs N] [--events N] [--keys N] [--counters LIST] [--drain-up-to N]
                                             [--kafka-client NAME] [--out FILE] [--no-cpu-prof]

Benchmarks the aggregator on real services and writes a markdown report:
  setup     produces a backlog of usage events (default 1,000,000 over 10,000 API keys, 6 partitions,
            event times over the last minute; about 1% of them on a few hot keys that cross a limit);
  baseline  a bare consumer of the same Kafka client (the port's group consumer, with the Aggregator's
            consumer settings) that only counts each batch's records and commits it as the Aggregator
            does, draining the whole backlog: events/s;
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
  --events-per-record N  pack the backlog's events into usage batch records of N events per
                 partition, as gateways send them (default 1: one event per record)
  --keys N       API keys the events are spread over (default 10,000; 2,000 with --quick)
  --counters L   memory section sizes, e.g. 100000,1000000 (default; 100000 with --quick), 0 for none
  --drain-up-to N  the largest memory size drained through a real Aggregator (default 100,000;
                 1,000,000 takes a few more minutes on 2 cores); larger ones are built alone only
${kafkaClientHelp(17)}
  --out FILE     where to write the report (default ops/bench/results/aggregator.md)
  --no-cpu-prof  skip the profiled drain
  -h, --help     this text

${LOGS_HELP}
`;

export interface Sizes {
  runs: number;
  events: number;
  /** Usage events per Kafka record in the throughput backlog: 1, or packed into usage batch records as gateways send them. */
  eventsPerRecord: number;
  keys: number;
  /** Memory section: how many counters an aggregator holds, one size after the other. */
  memoryCounters: number[];
  /** Memory section: runs per size drained through an Aggregator, and per larger size (built alone only). */
  memoryRuns: number;
  aloneRuns: number;
  /** Memory section: the largest size drained through a real Aggregator; larger ones are built alone only. */
  drainUpTo: number;
}

export const FULL: Sizes = {
  runs: 3,
  events: 1_000_000,
  eventsPerRecord: 1,
  keys: 10_000,
  memoryCounters: [100_000, 1_000_000],
  memoryRuns: 2,
  aloneRuns: 1,
  drainUpTo: 100_000,
};
const QUICK: Sizes = { runs: 1, events: 100_000, eventsPerRecord: 1, keys: 2_000, memoryCounters: [100_000], memoryRuns: 1, aloneRuns: 1, drainUpTo: 100_000 };

export interface Options {
  sizes: Sizes;
  client: KafkaClientName;
  outFile: string;
  /** Profile one more aggregator drain. */
  cpuProf: boolean;
}

/** The options, or the exit code when there is nothing to run (help, or a wrong command line). */
export function parseOptions(): Options | number {
  const values = benchArgs(HELP, {
    quick: { type: 'boolean' },
    runs: { type: 'string' },
    events: { type: 'string' },
    'events-per-record': { type: 'string' },
    keys: { type: 'string' },
    counters: { type: 'string' },
    'drain-up-to': { type: 'string' },
    'kafka-client': { type: 'string' },
    out: { type: 'string' },
    'no-cpu-prof': { type: 'boolean' },
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
  const perRecord = wholeNumber('--events-per-record', values['events-per-record'], 1, 2_000);
  if (perRecord === null) return 2;
  if (perRecord !== undefined) sizes.eventsPerRecord = perRecord;
  const drainUpTo = wholeNumber('--drain-up-to', values['drain-up-to'], 0, 10_000_000);
  const client = kafkaClientOption(values['kafka-client']);
  if (drainUpTo === null || client === null) return 2;
  if (drainUpTo !== undefined) sizes.drainUpTo = drainUpTo;
  return { sizes, client, outFile: resolvePath(values.out ?? join(RESULTS_DIR, 'aggregator.md')), cpuProf: !values['no-cpu-prof'] };
}
