/**
 * What the command line and the environment say, read in one place: the flags several commands
 * share, the variables they fall back to, logging, and the crash tests' fault injection. Every
 * command passes its `io.env` here; src/stack reads its own variables (KAFKA_BROKERS, REDIS_URL,
 * QUOTAFLOW_STACK) from the env object it is handed.
 */
import { QuotaflowError } from '../errors.ts';
import type { Level } from '../log.ts';
import { topicNames } from '../kafka/topics.ts';
import { isKafkaClientName } from '../kafka/client.ts';
import { KAFKA_CLIENTS, type KafkaClientName } from '../kafka/port.ts';
import type { OptionSpec } from './define.ts';

/** The shared flags, declared once; a command picks the ones it takes with `shared(...)`. */
export const SHARED = {
  brokers: { type: 'string', value: 'LIST', help: 'Kafka brokers, host:port,...', env: 'KAFKA_BROKERS' },
  redis: { type: 'string', value: 'URL', help: 'Redis, redis://host:port', env: 'REDIS_URL' },
  'topic-prefix': { type: 'string', value: 'P', help: "prefix of quotaflow's topic names", env: 'QUOTAFLOW_TOPIC_PREFIX', fallback: 'none' },
  'key-prefix': { type: 'string', value: 'P', help: "prefix of quotaflow's Redis keys", env: 'QUOTAFLOW_KEY_PREFIX', fallback: 'qf:' },
  'metrics-port': {
    type: 'string',
    value: 'N',
    help: 'serve Prometheus metrics at http://<host>:N/metrics on every interface;\n0 picks a free port',
    env: 'QUOTAFLOW_METRICS_PORT',
    fallback: 'no endpoint',
  },
  'kafka-client': {
    type: 'string',
    value: 'NAME',
    help: `the Kafka client library: ${KAFKA_CLIENTS.join(' or ')}`,
    env: 'QUOTAFLOW_KAFKA_CLIENT',
    fallback: 'kafkajs',
  },
  json: { type: 'boolean', help: 'machine-readable output' },
} as const satisfies Record<string, OptionSpec>;

type Shared = typeof SHARED;

export function shared<const K extends keyof Shared>(...names: K[]): Pick<Shared, K> {
  return Object.fromEntries(names.map((n) => [n, SHARED[n]])) as Pick<Shared, K>;
}

/** A variable's value; set but empty counts as not set. */
function variable(env: NodeJS.ProcessEnv, name: string): string | undefined {
  return env[name] || undefined;
}

/** --brokers, else KAFKA_BROKERS; a usage error naming both when neither is set. */
export function kafkaBrokers(values: { brokers?: string }, env: NodeJS.ProcessEnv): string[] {
  const brokers =
    (values.brokers ?? variable(env, SHARED.brokers.env))
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean) ?? [];
  if (brokers.length === 0) {
    throw new QuotaflowError('USAGE', 'no Kafka brokers given', {
      hint: `pass --brokers host:port[,host:port...] (or set ${SHARED.brokers.env}); \`quotaflow stack up\` starts a local Kafka and prints its address`,
    });
  }
  return brokers;
}

/** --redis, else REDIS_URL; a usage error naming both when neither is set. */
export function redisUrl(values: { redis?: string }, env: NodeJS.ProcessEnv): string {
  const url = values.redis || variable(env, SHARED.redis.env);
  if (!url) {
    throw new QuotaflowError('USAGE', 'no Redis URL given', {
      hint: `pass --redis redis://host:port (or set ${SHARED.redis.env}); \`quotaflow stack up\` starts a local Redis and prints its address`,
    });
  }
  return url;
}

/** --kafka-client, else QUOTAFLOW_KAFKA_CLIENT, else kafkajs. */
export function kafkaClient(values: { 'kafka-client'?: string }, env: NodeJS.ProcessEnv): KafkaClientName {
  const fromFlag = values['kafka-client'];
  const name = fromFlag ?? variable(env, SHARED['kafka-client'].env) ?? 'kafkajs';
  if (!isKafkaClientName(name)) {
    throw new QuotaflowError(
      'USAGE',
      `${fromFlag === undefined ? SHARED['kafka-client'].env : '--kafka-client'} ${JSON.stringify(name)} is not a Kafka client quotaflow has`,
      {
        hint: `use ${KAFKA_CLIENTS.join(' or ')}`,
      },
    );
  }
  return name;
}

/** --topic-prefix, else QUOTAFLOW_TOPIC_PREFIX, else none; checked against Kafka's rule for topic names. */
export function topicPrefix(values: { 'topic-prefix'?: string }, env: NodeJS.ProcessEnv): string {
  const fromFlag = values['topic-prefix'];
  const prefix = fromFlag ?? variable(env, SHARED['topic-prefix'].env) ?? '';
  // Checked here so the error names the setting, not a broker error code.
  const room = 249 - topicNames('').usageDlq.length;
  if (!/^[A-Za-z0-9._-]*$/.test(prefix) || prefix.length > room) {
    throw new QuotaflowError(
      'USAGE',
      `${fromFlag === undefined ? SHARED['topic-prefix'].env : '--topic-prefix'} ${JSON.stringify(prefix)} would make invalid topic names`,
      {
        hint: `use letters, digits, '.', '_' and '-', at most ${room} characters, e.g. \`--topic-prefix staging.\``,
      },
    );
  }
  return prefix;
}

/** --key-prefix, else QUOTAFLOW_KEY_PREFIX, else `qf:`: never empty, no braces or spaces (Redis Cluster hash tags). */
export function keyPrefix(values: { 'key-prefix'?: string }, env: NodeJS.ProcessEnv): string {
  const fromFlag = values['key-prefix'];
  const prefix = fromFlag ?? variable(env, SHARED['key-prefix'].env) ?? 'qf:';
  if (prefix === '' || /[{}\s]/.test(prefix)) {
    throw new QuotaflowError(
      'USAGE',
      `${fromFlag === undefined ? SHARED['key-prefix'].env : '--key-prefix'} ${JSON.stringify(prefix)} is empty or has braces or spaces`,
      {
        hint: 'e.g. `--key-prefix demo:` (braces would break the Redis Cluster hash tags)',
      },
    );
  }
  return prefix;
}

/** --metrics-port, else QUOTAFLOW_METRICS_PORT: a port, 0 for any free one, undefined for no endpoint. */
export function metricsPort(values: { 'metrics-port'?: string }, env: NodeJS.ProcessEnv): number | undefined {
  const fromFlag = values['metrics-port'];
  const text = fromFlag ?? variable(env, SHARED['metrics-port'].env);
  if (text === undefined) return undefined;
  const port = /^\d{1,5}$/.test(text.trim()) ? Number(text) : NaN;
  if (!(port <= 65_535)) {
    throw new QuotaflowError(
      'USAGE',
      `${fromFlag === undefined ? SHARED['metrics-port'].env : '--metrics-port'} ${JSON.stringify(text)} is not a port number`,
      {
        hint: 'give an integer from 0 to 65535 (0 picks a free port), e.g. `--metrics-port 9464`',
      },
    );
  }
  return port;
}

/** QUOTAFLOW_LOG: the level logs start at. */
export function logLevel(env: NodeJS.ProcessEnv): Level | 'silent' {
  return (env.QUOTAFLOW_LOG ?? 'info') as Level | 'silent';
}

/** QUOTAFLOW_LOG_FORMAT, else readable lines on a terminal and JSON lines elsewhere. */
export function logFormat(env: NodeJS.ProcessEnv, stderrIsTTY: boolean): 'json' | 'pretty' {
  return (env.QUOTAFLOW_LOG_FORMAT ?? (stderrIsTTY ? 'pretty' : 'json')) === 'pretty' ? 'pretty' : 'json';
}

/** Fault injection for the crash tests only (see AggregatorOptions); never set in production. */
export function faultPauseBeforeCommitMs(env: NodeJS.ProcessEnv): number | undefined {
  const text = variable(env, 'QUOTAFLOW_FAULT_PAUSE_BEFORE_COMMIT_MS');
  return text === undefined ? undefined : Number(text);
}
