/**
 * The one place that constructs kafkajs clients: brokers, client id, and kafkajs's own logs routed
 * into our structured logger. Everything else receives a `Kafka` instance from here.
 */
import { Kafka, logLevel, type Admin, type KafkaConfig, type LogEntry } from 'kafkajs';
import { QuotaflowError } from '../errors.ts';
import { logger, type Logger } from '../log.ts';

// kafkajs warns on every producer about a partitioner change made in 2.0; we choose explicitly.
process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';

export interface KafkaClientOptions {
  brokers: string[];
  clientId: string;
  log?: Logger;
  /** kafkajs's own retry settings; defaults suit long-running services. */
  retry?: KafkaConfig['retry'];
  connectionTimeoutMs?: number;
  /** Silence kafkajs's internal logs below this level (default: warn). */
  minLogLevel?: 'error' | 'warn' | 'info' | 'debug' | 'nothing';
}

const LEVELS: Record<NonNullable<KafkaClientOptions['minLogLevel']>, logLevel> = {
  nothing: logLevel.NOTHING,
  error: logLevel.ERROR,
  warn: logLevel.WARN,
  info: logLevel.INFO,
  debug: logLevel.DEBUG,
};

export function createKafka(options: KafkaClientOptions): Kafka {
  const log = options.log ?? logger('kafkajs');
  return new Kafka({
    clientId: options.clientId,
    brokers: options.brokers,
    connectionTimeout: options.connectionTimeoutMs ?? 3_000,
    retry: options.retry ?? { initialRetryTime: 200, retries: 8, maxRetryTime: 5_000 },
    logLevel: LEVELS[options.minLogLevel ?? 'warn'],
    logCreator: () => ({ namespace, level, log: entry }: LogEntry) => {
      const { message, ...fields } = entry;
      const f = { namespace, ...fields };
      // kafkajs logs every error response it is about to retry (a coordinator still loading, a
      // leader moving) at ERROR; the operation's own failure surfaces as a thrown error if retries
      // run out, so these are debug detail.
      if (namespace === 'Connection' && message.startsWith('Response ')) log.debug(message, f);
      // Our idempotent producers bound their retries on purpose (see the Aggregator's constructor):
      // kafkajs warns about that on every start, which reads like a fault to an operator.
      else if (message.startsWith('Limiting retries for the idempotent producer')) log.debug(message, f);
      else if (level === logLevel.ERROR) log.error(message, f);
      else if (level === logLevel.WARN) log.warn(message, f);
      else if (level === logLevel.INFO) log.info(message, f);
      else log.debug(message, f);
    },
  });
}

/** Polls until the cluster answers with `expectedBrokers` registered brokers, or throws on timeout. */
export async function waitForCluster(
  brokers: string[],
  opts: { expectedBrokers?: number; timeoutMs: number; signal?: AbortSignal; isAlive?: () => boolean },
): Promise<{ brokers: number; controller: number | null; clusterId: string }> {
  const kafka = createKafka({ brokers, clientId: 'quotaflow-probe', retry: { retries: 0 }, connectionTimeoutMs: 1_000, minLogLevel: 'nothing' });
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    if (opts.isAlive && !opts.isAlive()) break;
    const admin = kafka.admin();
    try {
      await admin.connect();
      const cluster = await admin.describeCluster();
      if (cluster.brokers.length >= (opts.expectedBrokers ?? 1)) {
        return { brokers: cluster.brokers.length, controller: cluster.controller, clusterId: cluster.clusterId };
      }
      lastError = new Error(`${cluster.brokers.length} of ${opts.expectedBrokers} brokers registered`);
    } catch (e) {
      lastError = e;
    } finally {
      await admin.disconnect().catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw lastError instanceof Error ? lastError : new Error(String(lastError));
}

/**
 * Waits until the group coordinator answers. A new cluster creates `__consumer_offsets` on the first
 * group request and answers "coordinator loading" until it is ready; doing that here means the first
 * real consumer does not crash-and-restart on a fresh broker.
 */
export async function waitForGroupCoordinator(brokers: string[], timeoutMs: number): Promise<void> {
  const kafka = createKafka({ brokers, clientId: 'quotaflow-probe', retry: { retries: 0 }, connectionTimeoutMs: 1_000, minLogLevel: 'nothing' });
  const admin = kafka.admin();
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  try {
    await admin.connect();
    while (Date.now() < deadline) {
      try {
        await admin.describeGroups(['quotaflow-coordinator-probe']);
        return;
      } catch (e) {
        lastError = e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  } finally {
    await admin.disconnect().catch(() => {});
  }
  throw lastError instanceof Error ? lastError : new Error('the group coordinator did not become available');
}

/** Connects an admin client, or throws SERVICE_UNREACHABLE naming the brokers and the next step. */
export async function connectAdmin(admin: Admin, brokers: string[]): Promise<void> {
  try {
    await admin.connect();
  } catch (e) {
    throw new QuotaflowError('SERVICE_UNREACHABLE', `cannot reach Kafka at ${brokers.join(',')}: ${e instanceof Error ? e.message : String(e)}`, {
      retriable: true,
      hint: 'check --brokers / KAFKA_BROKERS, or start a local Kafka with `quotaflow stack up`',
      cause: e,
    });
  }
}

/**
 * For commands a person runs: checks quickly (a few retries, no kafkajs log lines) that Kafka answers
 * and that these topics exist, so a wrong address or prefix is one clear error instead of a stack.
 */
export async function requireTopics(brokers: string[], topics: readonly string[]): Promise<void> {
  const kafka = createKafka({ brokers, clientId: 'quotaflow-probe', retry: { initialRetryTime: 200, retries: 3, maxRetryTime: 1_000 }, minLogLevel: 'nothing' });
  const admin = kafka.admin();
  await connectAdmin(admin, brokers);
  try {
    const existing = new Set(await admin.listTopics());
    const missing = topics.filter((t) => !existing.has(t));
    if (missing.length) {
      throw new QuotaflowError('PRECONDITION_FAILED', `Kafka at ${brokers.join(',')} has no topic ${missing.join(', ')}`, {
        hint: 'check --topic-prefix (and --brokers); `quotaflow topics create` creates quotaflow\'s topics',
      });
    }
  } finally {
    await admin.disconnect().catch(() => {});
  }
}
