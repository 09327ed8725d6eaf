/**
 * The one place that constructs kafkajs clients: brokers, client id, and kafkajs's own logs routed
 * into our structured logger. Everything else receives a `Kafka` instance from here.
 */
import { Kafka, logLevel, type KafkaConfig, type LogEntry } from 'kafkajs';
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
