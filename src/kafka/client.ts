/**
 * Where a KafkaPort comes from: the one factory that picks the client library (KafkaSettings.client,
 * `--kafka-client`, QUOTAFLOW_KAFKA_CLIENT), and the checks commands and the stack run through it.
 */
import { QuotaflowError } from '../errors.ts';
import { KafkajsPort } from './kafkajs/index.ts';
import { PlatformaticPort } from './platformatic/index.ts';
import { KAFKA_CLIENTS, type Admin, type KafkaClientName, type KafkaPort, type KafkaSettings } from './port.ts';

export function isKafkaClientName(name: string): name is KafkaClientName {
  return (KAFKA_CLIENTS as readonly string[]).includes(name);
}

/** A client behind the port, as the settings say (kafkajs by default). Nothing connects until used. */
export function kafkaPort(settings: KafkaSettings): KafkaPort {
  const name = settings.client ?? 'kafkajs';
  if (name === 'kafkajs') return new KafkajsPort(settings);
  if (name === 'platformatic') return new PlatformaticPort(settings);
  throw new QuotaflowError('USAGE', `unknown Kafka client ${JSON.stringify(name)}`, { hint: `use one of ${KAFKA_CLIENTS.join(', ')}` });
}

/** A quick probe client: few retries, none of the library's log lines. */
function probe(brokers: string[], client: KafkaClientName | undefined, retries = 0): KafkaPort {
  return kafkaPort({
    brokers,
    client,
    clientId: 'quotaflow-probe',
    retry: { retries, initialRetryMs: 200, maxRetryMs: 1_000 },
    connectionTimeoutMs: 1_000,
    minLogLevel: 'nothing',
  });
}

/** Polls until the cluster answers with `expectedBrokers` registered brokers, or throws on timeout. */
export async function waitForCluster(
  brokers: string[],
  opts: { expectedBrokers?: number; timeoutMs: number; signal?: AbortSignal; isAlive?: () => boolean; client?: KafkaClientName },
): Promise<{ brokers: number; controller: number | null; clusterId: string }> {
  const kafka = probe(brokers, opts.client);
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    if (opts.isAlive && !opts.isAlive()) break;
    const admin = kafka.admin();
    try {
      await admin.connect();
      const cluster = await admin.cluster();
      if (cluster.brokers >= (opts.expectedBrokers ?? 1)) return cluster;
      lastError = new Error(`${cluster.brokers} of ${opts.expectedBrokers} brokers registered`);
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
export async function waitForGroupCoordinator(brokers: string[], timeoutMs: number, client?: KafkaClientName): Promise<void> {
  const admin = probe(brokers, client).admin();
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  try {
    await admin.connect();
    while (Date.now() < deadline) {
      try {
        await admin.groupMembers('quotaflow-coordinator-probe');
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
export async function connectAdmin(admin: Admin, brokers: readonly string[]): Promise<void> {
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
 * For commands a person runs: checks quickly (a few retries, no log lines of the client's) that
 * Kafka answers and that these topics exist, so a wrong address or prefix is one clear error.
 */
export async function requireTopics(brokers: string[], topics: readonly string[], client?: KafkaClientName): Promise<void> {
  const admin = probe(brokers, client, 3).admin();
  await connectAdmin(admin, brokers);
  try {
    const existing = new Set(await admin.listTopics());
    const missing = topics.filter((t) => !existing.has(t));
    if (missing.length) {
      throw new QuotaflowError('PRECONDITION_FAILED', `Kafka at ${brokers.join(',')} has no topic ${missing.join(', ')}`, {
        hint: "check --topic-prefix (and --brokers); `quotaflow topics create` creates quotaflow's topics",
      });
    }
  } finally {
    await admin.disconnect().catch(() => {});
  }
}
