import { parseArgs } from 'node:util';
import { EXIT, untilAborted, wantsHelp, type Command } from './command.ts';
import { QuotaflowError } from '../errors.ts';
import { logger } from '../log.ts';
import { compilePolicy, loadPolicyFile } from '../policy/index.ts';
import { createKafka } from '../kafka/client.ts';
import { topicNames } from '../kafka/topics.ts';
import { Aggregator } from '../aggregator/aggregator.ts';
import { openUsageStore } from '../store/index.ts';
import { startTelemetry } from '../telemetry/sdk.ts';

const HELP = `Usage: quotaflow aggregator --policy FILE [options]

Joins the aggregator consumer group on quota.usage, folds usage events into rolling windows in
Redis (effectively once: writes are fenced by Kafka offsets), and publishes block/unblock decisions
to quota.decisions, breach records to quota.audit and bad events to quota.usage.dlq. Run several
for throughput and failover: Kafka shares the partitions among them. SIGTERM or Ctrl-C finishes the
batch in flight, commits, and leaves the group.

Options:
  --policy FILE       the policy (YAML or JSON) to count under (required)
  --brokers LIST      Kafka brokers, host:port,... (default: KAFKA_BROKERS)
  --redis URL         Redis, redis://host:port (default: REDIS_URL)
  --group ID          consumer group (default: quotaflow-aggregators)
  --region NAME       region stamped on decisions and records (default: local)
  --topic-prefix P    prefix of quotaflow's topic names (default: none)
  --key-prefix P      prefix of quotaflow's Redis keys (default: qf:)
  --near-ratio R      publish near-limit snapshots from this share of a limit (default 0.8; 0 = off):
                      gateways then admit only their share of the room left, so overshoot stays small
  --future-skew MS    events dated further ahead than this go to the DLQ (default: 60000)
  --stats-every MS    log throughput figures this often (default: 10000; 0 = never)
  --session-timeout MS  how long the group waits for a silent member before moving its partitions
                      (default: 30000; the broker allows 6000 and up)
  --metrics-port N    serve Prometheus metrics at http://<host>:N/metrics on every interface
                      (default: QUOTAFLOW_METRICS_PORT, else no endpoint; 0 picks a free port)

Examples:
  quotaflow topics create
  quotaflow aggregator --policy ops/policies/talkpilot.yaml
  quotaflow aggregator --policy ops/policies/talkpilot.yaml --metrics-port 9464
  KAFKA_BROKERS=10.0.0.5:9092 REDIS_URL=redis://10.0.0.6:6379 quotaflow aggregator --policy ops/policies/bolna.yaml --region eu-west-1
`;

export const aggregatorCommand: Command = {
  name: 'aggregator',
  summary: 'fold usage events from Kafka into Redis and publish block decisions',
  help: HELP,
  async run(argv, io) {
    if (wantsHelp(argv)) {
      io.out(HELP);
      return EXIT.OK;
    }
    const { values } = parseArgs({
      args: argv,
      options: {
        policy: { type: 'string' }, brokers: { type: 'string' }, redis: { type: 'string' }, group: { type: 'string' },
        region: { type: 'string' }, 'topic-prefix': { type: 'string' }, 'key-prefix': { type: 'string' },
        'future-skew': { type: 'string' }, 'near-ratio': { type: 'string' }, 'stats-every': { type: 'string' }, 'session-timeout': { type: 'string' },
        'metrics-port': { type: 'string' },
      },
    });
    if (!values.policy) throw new QuotaflowError('USAGE', '--policy FILE is required', { hint: 'e.g. `quotaflow aggregator --policy ops/policies/talkpilot.yaml`' });
    const brokers = (values.brokers ?? io.env.KAFKA_BROKERS)?.split(',').map((s) => s.trim()).filter(Boolean);
    const redisUrl = values.redis ?? io.env.REDIS_URL;
    if (!brokers?.length || !redisUrl) {
      throw new QuotaflowError('USAGE', `no ${!brokers?.length ? 'Kafka brokers' : 'Redis URL'} given`, {
        hint: 'pass --brokers and --redis (or set KAFKA_BROKERS and REDIS_URL); `quotaflow stack up` starts a local pair and prints them',
      });
    }
    const log = logger('aggregator');
    const metricsPort = values['metrics-port'] !== undefined
      ? parseMetricsPort(values['metrics-port'], '--metrics-port')
      : parseMetricsPort(io.env.QUOTAFLOW_METRICS_PORT || undefined, 'QUOTAFLOW_METRICS_PORT');
    // Before the aggregator exists: it takes its meter from the global API when it is built.
    const telemetry = await startTelemetry({ service: 'quotaflow-aggregator', metricsPort });
    if (telemetry.metricsUrl) log.info('serving metrics', { url: telemetry.metricsUrl });
    try {
      const policy = compilePolicy(await loadPolicyFile(values.policy));
      const kafka = createKafka({ brokers, clientId: `quotaflow-aggregator-${process.pid}` });
      const store = await openUsageStore(redisUrl, { keyPrefix: values['key-prefix'] ?? 'qf:' });
      const aggregator = new Aggregator({
        kafka,
        store,
        policy,
        topics: topicNames(values['topic-prefix'] ?? ''),
        groupId: values.group ?? 'quotaflow-aggregators',
        region: values.region ?? 'local',
        nearRatio: parseNearRatio(values['near-ratio']),
        futureSkewMs: values['future-skew'] === undefined ? undefined : Number(values['future-skew']),
        sessionTimeoutMs: values['session-timeout'] === undefined ? undefined : Number(values['session-timeout']),
        // Fault injection for the crash tests only (see AggregatorOptions); never set in production.
        faultPauseBeforeCommitMs: io.env.QUOTAFLOW_FAULT_PAUSE_BEFORE_COMMIT_MS ? Number(io.env.QUOTAFLOW_FAULT_PAUSE_BEFORE_COMMIT_MS) : undefined,
        log,
      });
      await aggregator.start();
      log.info('aggregating', { policy: values.policy, version: policy.version, brokers: brokers.join(','), group: values.group ?? 'quotaflow-aggregators' });
      const every = Number(values['stats-every'] ?? 10_000);
      let last = { ...aggregator.stats, at: Date.now() };
      const statsTimer = every > 0 ? setInterval(() => {
        const s = aggregator.stats;
        const secs = (Date.now() - last.at) / 1000;
        log.info('throughput', { eventsPerSec: Math.round((s.events - last.events) / secs), ...s });
        last = { ...s, at: Date.now() };
      }, every) : undefined;
      let fatal: unknown;
      const stop = new AbortController();
      io.signal.addEventListener('abort', () => stop.abort(), { once: true });
      aggregator.once('fatal', (e) => {
        fatal = e;
        stop.abort();
      });
      if (io.signal.aborted) stop.abort();
      await untilAborted(stop.signal);
      clearInterval(statsTimer);
      await aggregator.stop().catch(() => {});
      await store.close();
      if (fatal !== undefined) {
        io.err(`quotaflow aggregator: stopped on an error Kafka will not retry: ${fatal instanceof Error ? fatal.message : String(fatal)}\n  → fix the cause in the log above and start the aggregator again; it resumes from the last committed offset`);
        return EXIT.FAILURE;
      }
      return EXIT.OK;
    } finally {
      await telemetry.shutdown();
    }
  },
};

/** `--metrics-port` / `QUOTAFLOW_METRICS_PORT`: a port number, 0 for any free one, undefined for no endpoint. */
export function parseMetricsPort(text: string | undefined, source = '--metrics-port'): number | undefined {
  if (text === undefined) return undefined;
  const port = /^\d{1,5}$/.test(text.trim()) ? Number(text) : NaN;
  if (!(port <= 65_535)) {
    throw new QuotaflowError('USAGE', `${source} ${JSON.stringify(text)} is not a port number`, {
      hint: 'give an integer from 0 to 65535 (0 picks a free port), e.g. `--metrics-port 9464`',
    });
  }
  return port;
}

function parseNearRatio(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const r = Number(text);
  if (text.trim() === '' || !(r >= 0 && r < 1)) {
    throw new QuotaflowError('USAGE', `--near-ratio ${JSON.stringify(text)} is not a number from 0 up to (not including) 1`, { hint: 'e.g. `--near-ratio 0.9`, or `--near-ratio 0` to turn near-limit shares off' });
  }
  return r;
}
