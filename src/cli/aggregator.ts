import { EXIT, untilAborted } from './command.ts';
import { defineCommand } from './define.ts';
import { faultPauseBeforeCommitMs, kafkaBrokers, kafkaClient, keyPrefix, metricsPort, redisUrl, shared, topicPrefix } from './settings.ts';
import { QuotaflowError } from '../errors.ts';
import { logger } from '../log.ts';
import { compilePolicy, loadPolicyFile } from '../policy/index.ts';
import { kafkaPort, requireTopics } from '../kafka/client.ts';
import { groupNames, topicNames } from '../kafka/topics.ts';
import { Aggregator } from '../aggregator/aggregator.ts';
import { DEFAULT_ROLLUP_EVERY_MS } from '../aggregator/rollups.ts';
import { openUsageStore } from '../store/index.ts';
import { startTelemetry } from '../telemetry/sdk.ts';

export const aggregatorCommand = defineCommand({
  name: 'aggregator',
  summary: 'fold usage events from Kafka into Redis and publish block decisions',
  usage: ['quotaflow aggregator --policy FILE [options]'],
  description: `Joins the aggregator consumer group on quota.usage, folds usage events into rolling windows in
Redis (effectively once: writes are fenced by Kafka offsets), and publishes block/unblock decisions
to quota.decisions, breach records to quota.audit and bad events to quota.usage.dlq. Run several
for throughput and failover: Kafka shares the partitions among them. SIGTERM or Ctrl-C finishes the
batch in flight, commits, and leaves the group.`,
  options: {
    policy: { type: 'string', value: 'FILE', help: 'the policy (YAML or JSON) to count under (required)' },
    ...shared('brokers', 'redis'),
    group: { type: 'string', value: 'ID', help: 'consumer group (default: <topic prefix>quotaflow-aggregators)' },
    region: { type: 'string', value: 'NAME', help: 'region stamped on decisions and records (default: local)' },
    ...shared('topic-prefix', 'kafka-client'),
    ...shared('key-prefix'),
    'near-ratio': {
      type: 'string',
      value: 'R',
      help: 'publish near-limit snapshots from this share of a limit (default 0.8; 0 = off):\ngateways then admit only their share of the room left, so overshoot stays small',
    },
    'future-skew': { type: 'string', value: 'MS', help: 'events dated further ahead than this go to the DLQ (default: 60000)' },
    'stats-every': { type: 'string', value: 'MS', help: 'log throughput figures this often (default: 10000; 0 = never)' },
    'session-timeout': {
      type: 'string',
      value: 'MS',
      help: 'how long the group waits for a silent member before moving its partitions\n(default: 30000; the broker allows 6000 and up)',
    },
    rollups: {
      type: 'boolean',
      help: "publish this region's bucket totals to quota.rollup, for MirrorMaker 2 to carry to\nthe other regions (`quotaflow stack up --regions` shows the setup)",
    },
    'rollup-every': { type: 'string', value: 'MS', help: 'with --rollups: publish changed totals at most this often (default 250)' },
    ...shared('metrics-port'),
  },
  examples: [
    'quotaflow topics create',
    'quotaflow aggregator --policy policies/talkpilot.yaml',
    'quotaflow aggregator --policy policies/talkpilot.yaml --metrics-port 9464',
    'KAFKA_BROKERS=10.0.0.5:9092 REDIS_URL=redis://10.0.0.6:6379 quotaflow aggregator --policy policies/bolna.yaml --region eu-west-1',
    'quotaflow aggregator --policy policies/talkpilot.yaml --region east --rollups',
  ],
  exitCodes: {
    0: 'stopped by SIGTERM or Ctrl-C, after committing',
    1: 'stopped on an error Kafka will not retry, or the policy is invalid',
    2: 'bad usage',
    3: 'Kafka or Redis unreachable, or the metrics port taken',
  },
  async run({ values, io }) {
    if (!values.policy)
      throw new QuotaflowError('USAGE', '--policy FILE is required', { hint: 'e.g. `quotaflow aggregator --policy policies/talkpilot.yaml`' });
    const brokers = kafkaBrokers(values, io.env);
    const redis = redisUrl(values, io.env);
    const prefix = topicPrefix(values, io.env);
    const topics = topicNames(prefix);
    const group = values.group ?? groupNames(prefix).aggregators;
    const nearRatio = parseNearRatio(values['near-ratio']);
    const rollups = parseRollups(values.rollups ?? false, values['rollup-every']);
    const log = logger('aggregator');
    // Before the aggregator exists: it takes its meter from the global API when it is built.
    const telemetry = await startTelemetry({ service: 'quotaflow-aggregator', metricsPort: metricsPort(values, io.env) });
    if (telemetry.metricsUrl) log.info('serving metrics', { url: telemetry.metricsUrl });
    try {
      const policy = compilePolicy(await loadPolicyFile(values.policy));
      const client = kafkaClient(values, io.env);
      // A wrong prefix or a cluster without quotaflow's topics is one clear error, not a client's trace.
      // The rollup topic only where rollups are published: a region of its own needs none.
      await requireTopics(
        brokers,
        Object.values(topics).filter((t) => rollups || t !== topics.rollup),
        client,
      );
      const kafka = kafkaPort({ brokers, clientId: `quotaflow-aggregator-${process.pid}`, client });
      const store = await openUsageStore(redis, { keyPrefix: keyPrefix(values, io.env) });
      const aggregator = new Aggregator({
        kafka,
        store,
        policy,
        topics,
        groupId: group,
        region: values.region ?? 'local',
        nearRatio,
        futureSkewMs: values['future-skew'] === undefined ? undefined : Number(values['future-skew']),
        sessionTimeoutMs: values['session-timeout'] === undefined ? undefined : Number(values['session-timeout']),
        faultPauseBeforeCommitMs: faultPauseBeforeCommitMs(io.env),
        rollups,
        log,
      });
      await aggregator.start();
      log.info('aggregating', { policy: values.policy, version: policy.version, brokers: brokers.join(','), group });
      const every = Number(values['stats-every'] ?? 10_000);
      let last = { ...aggregator.stats, at: Date.now() };
      const statsTimer =
        every > 0
          ? setInterval(() => {
              const s = aggregator.stats;
              const secs = (Date.now() - last.at) / 1000;
              log.info('throughput', { eventsPerSec: Math.round((s.events - last.events) / secs), ...s });
              last = { ...s, at: Date.now() };
            }, every)
          : undefined;
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
        io.err(
          `quotaflow aggregator: stopped on an error Kafka will not retry: ${fatal instanceof Error ? fatal.message : String(fatal)}\n  → fix the cause in the log above and start the aggregator again; it resumes from the last committed offset`,
        );
        return EXIT.FAILURE;
      }
      return EXIT.OK;
    } finally {
      await telemetry.shutdown();
    }
  },
});

function parseNearRatio(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const r = Number(text);
  if (text.trim() === '' || !(r >= 0 && r < 1)) {
    throw new QuotaflowError('USAGE', `--near-ratio ${JSON.stringify(text)} is not a number from 0 up to (not including) 1`, {
      hint: 'e.g. `--near-ratio 0.9`, or `--near-ratio 0` to turn near-limit shares off',
    });
  }
  return r;
}

function parseRollups(on: boolean, every: string | undefined): { everyMs: number } | undefined {
  if (every !== undefined && !on)
    throw new QuotaflowError('USAGE', '--rollup-every applies with --rollups only', { hint: 'add --rollups, or leave out --rollup-every' });
  if (!on) return undefined;
  if (every === undefined) return { everyMs: DEFAULT_ROLLUP_EVERY_MS };
  const ms = Number(every);
  if (!/^\d+$/.test(every) || ms < 10 || ms > 60_000)
    throw new QuotaflowError('USAGE', `--rollup-every takes a whole number of ms from 10 to 60000, not '${every}'`, { hint: 'e.g. --rollup-every 250' });
  return { everyMs: ms };
}
