/** The gateway benchmark's command line and the sizes of each section, full and --quick. */
import { join, resolve as resolvePath } from 'node:path';
import type { KafkaClientName } from '../../../src/kafka/port.ts';
import { benchArgs, kafkaClientHelp, kafkaClientOption, LOGS_HELP, SERVICES_HELP, wholeNumber } from '../common/cli.ts';
import { RESULTS_DIR } from '../common/report.ts';

const HELP = `Usage: npx tsx ops/bench/gateway/main.ts [--quick] [--runs N] [--kafka-client NAME] [--out FILE]

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
${kafkaClientHelp(14)}
  --out FILE  where to write the report (default ops/bench/results/gateway.md)
  -h, --help  this text

${LOGS_HELP}
`;

export interface Sizes {
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
  runs: 3,
  checkMs: 3_000,
  warmupMs: 1_000,
  keys: 10_000,
  memoryBlocks: 100_000,
  peerMs: 2_000,
  concurrencies: [16, 64, 256],
  decisionSamples: 150,
  decisionEveryMs: 20,
  decisionGateways: 3,
  overshootGateways: 8,
  overshootLimits: [100, 1_000],
  windowMs: 10_000,
  windowsPerRun: 2,
  loadFactor: 10,
};
const QUICK: Sizes = {
  ...FULL,
  runs: 1,
  checkMs: 2_000,
  warmupMs: 500,
  peerMs: 1_000,
  decisionSamples: 50,
  windowMs: 5_000,
  windowsPerRun: 1,
};

export interface Options {
  sizes: Sizes;
  client: KafkaClientName;
  outFile: string;
}

/** The options, or the exit code when there is nothing to run (help, or a wrong command line). */
export function parseOptions(): Options | number {
  const values = benchArgs(HELP, { quick: { type: 'boolean' }, runs: { type: 'string' }, 'kafka-client': { type: 'string' }, out: { type: 'string' } });
  if (typeof values === 'number') return values;
  const sizes: Sizes = { ...(values.quick ? QUICK : FULL) };
  const runs = wholeNumber('--runs', values.runs, 1, 50);
  const client = kafkaClientOption(values['kafka-client']);
  if (runs === null || client === null) return 2;
  if (runs !== undefined) sizes.runs = runs;
  return { sizes, client, outFile: resolvePath(values.out ?? join(RESULTS_DIR, 'gateway.md')) };
}
