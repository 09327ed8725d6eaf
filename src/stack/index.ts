/**
 * Chooses where Kafka and Redis come from, in one place, and says which path it took:
 *  1. KAFKA_BROKERS / REDIS_URL: existing services (checked to answer);
 *  2. else, where a Docker engine answers: testcontainers (apache/kafka, redis);
 *  3. else: the local launchers (Kafka jars from Maven Central on the JDK, Debian's redis-server).
 * QUOTAFLOW_STACK=local|containers forces path 2 or 3 for whatever is not configured.
 */
import { QuotaflowError } from '../errors.ts';
import { logger, type Logger } from '../log.ts';
import { waitForCluster } from '../kafka/client.ts';
import { dockerEngineAnswers, startContainers } from './containers.ts';
import { startLocalKafka } from './kafka-local.ts';
import { programsFrom } from './prereqs.ts';
import { redisPing, startLocalRedis } from './redis-local.ts';

export type StackSource = 'external' | 'containers' | 'local';

export interface Stack {
  brokers: string[];
  redisUrl: string;
  kafka: { source: StackSource; version: string | undefined };
  redis: { source: StackSource; version: string | undefined };
  /** pids of the processes this stack started (local path only), for orphan checks. */
  pids: number[];
  stop(): Promise<void>;
}

export interface StackOptions {
  env: NodeJS.ProcessEnv;
  log?: Logger;
  /** Options for the local Kafka path (fault tests ask for 3 nodes). */
  kafkaNodes?: number;
  kafkaHeapMb?: number;
  /** How long an external KAFKA_BROKERS / REDIS_URL may take to answer (default 10 s). */
  probeTimeoutMs?: number;
}

async function checkExternalKafka(brokers: string[], timeoutMs: number): Promise<void> {
  try {
    await waitForCluster(brokers, { timeoutMs });
  } catch (e) {
    throw new QuotaflowError(
      'SERVICE_UNREACHABLE',
      `KAFKA_BROKERS=${brokers.join(',')} does not answer as a Kafka cluster (${e instanceof Error ? e.message : String(e)}).`,
      {
        retriable: true,
        hint: 'check the address and that the brokers run, or unset KAFKA_BROKERS to have quotaflow start a local broker',
        cause: e,
      },
    );
  }
}

async function checkExternalRedis(url: string, timeoutMs: number): Promise<void> {
  let ok = false;
  try {
    const u = new URL(url);
    // A password or TLS URL cannot be probed with a bare PING; ioredis will report problems later.
    ok = u.password !== '' || u.protocol === 'rediss:' || (await redisPing(u.hostname || '127.0.0.1', Number(u.port || 6379), timeoutMs));
  } catch (e) {
    throw new QuotaflowError('CONFIG_INVALID', `REDIS_URL=${url} is not a valid URL (expected redis://host:port).`, {
      cause: e,
      hint: 'fix REDIS_URL or unset it',
    });
  }
  if (!ok) {
    throw new QuotaflowError('SERVICE_UNREACHABLE', `REDIS_URL=${url} does not answer PING.`, {
      retriable: true,
      hint: 'check the address and that Redis runs, or unset REDIS_URL to have quotaflow start a local redis-server',
    });
  }
}

export async function resolveStack(options: StackOptions): Promise<Stack> {
  const { env } = options;
  const log = options.log ?? logger('stack');
  const externalBrokers = env.KAFKA_BROKERS?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const externalRedis = env.REDIS_URL?.trim() || undefined;
  const forced = env.QUOTAFLOW_STACK as 'local' | 'containers' | undefined;
  if (forced !== undefined && forced !== 'local' && forced !== 'containers') {
    throw new QuotaflowError('CONFIG_INVALID', `QUOTAFLOW_STACK=${forced} is not one of local, containers.`, {
      hint: 'unset it, or set it to local or containers',
    });
  }

  const stoppers: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stoppers.reverse()) await stop().catch((e) => log.warn('stopping a service failed', { error: e }));
  };
  try {
    let brokers: string[];
    let redisUrl: string;
    let kafka: Stack['kafka'];
    let redis: Stack['redis'];
    const pids: number[] = [];

    if (externalBrokers?.length) {
      await checkExternalKafka(externalBrokers, options.probeTimeoutMs ?? 10_000);
      brokers = externalBrokers;
      kafka = { source: 'external', version: undefined };
      log.info('using the Kafka in KAFKA_BROKERS', { brokers: brokers.join(',') });
    }
    if (externalRedis) {
      await checkExternalRedis(externalRedis, options.probeTimeoutMs ?? 10_000);
      redisUrl = externalRedis;
      redis = { source: 'external', version: undefined };
      log.info('using the Redis in REDIS_URL', { url: redisUrl });
    }

    const needsKafka = !externalBrokers?.length;
    const needsRedis = !externalRedis;
    if (needsKafka || needsRedis) {
      const useContainers = forced === 'containers' || (forced === undefined && (await dockerEngineAnswers(env)));
      if (useContainers) {
        log.info('a Docker engine answers: starting Kafka and Redis with testcontainers');
        const c = await startContainers(log.child('containers'));
        stoppers.push(() => c.stop());
        if (needsKafka) {
          brokers = c.brokers;
          kafka = { source: 'containers', version: c.kafkaVersion };
        }
        if (needsRedis) {
          redisUrl = c.redisUrl;
          redis = { source: 'containers', version: '7' };
        }
      } else {
        log.info('no Docker engine and no KAFKA_BROKERS/REDIS_URL: starting a local stack (Kafka on the JDK, redis-server)');
        const programs = programsFrom(env);
        const [k, r] = await Promise.allSettled([
          needsKafka
            ? startLocalKafka({ programs, nodes: options.kafkaNodes, heapMb: options.kafkaHeapMb, log: log.child('kafka') })
            : Promise.resolve(undefined),
          needsRedis ? startLocalRedis({ programs, log: log.child('redis') }) : Promise.resolve(undefined),
        ]);
        const kc = k.status === 'fulfilled' ? k.value : undefined;
        const rc = r.status === 'fulfilled' ? r.value : undefined;
        if (kc) stoppers.push(() => kc.stop());
        if (rc) stoppers.push(() => rc.stop());
        if (k.status === 'rejected') throw k.reason;
        if (r.status === 'rejected') throw r.reason;
        if (kc) {
          brokers = kc.brokers;
          kafka = { source: 'local', version: kc.version };
          pids.push(...kc.nodes.map((n) => n.process.pid));
        }
        if (rc) {
          redisUrl = rc.url;
          redis = { source: 'local', version: rc.version };
          pids.push(rc.process.pid);
        }
      }
    }
    return { brokers: brokers!, redisUrl: redisUrl!, kafka: kafka!, redis: redis!, pids, stop: stopAll };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

export { startLocalKafka, ensureKafkaJars, pinnedKafkaVersion, type LocalKafkaCluster } from './kafka-local.ts';
export { startLocalRedis, type LocalRedis } from './redis-local.ts';
export { programsFrom, type Programs } from './prereqs.ts';
