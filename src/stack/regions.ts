/**
 * Several regions on one machine (DESIGN §5): each region a whole stack of its own, a local Kafka and
 * a local Redis, with quotaflow's topics created in it; and one MirrorMaker 2 that mirrors every
 * region's rollup topic to every other region (`east`'s `quota.rollup` is `east.quota.rollup` on
 * `west`). Nothing else crosses a region. Local path only: a region's services are started here.
 */
import { QuotaflowError } from '../errors.ts';
import { kafkaPort } from '../kafka/client.ts';
import { ensureTopics, topicNames, topicSpecs } from '../kafka/topics.ts';
import { logger, type Logger } from '../log.ts';
import { startLocalKafka, type LocalKafkaCluster } from './kafka-local.ts';
import { startMirrorMaker, type LocalMirrorMaker } from './mirror-maker.ts';
import type { Programs } from './prereqs.ts';
import { startLocalRedis, type LocalRedis } from './redis-local.ts';

export interface LocalRegion {
  name: string;
  brokers: string[];
  redisUrl: string;
  kafka: LocalKafkaCluster;
  redis: LocalRedis;
}

export interface LocalRegions {
  regions: LocalRegion[];
  mirrorMaker: LocalMirrorMaker;
  /** The topic each region publishes its rollups to (mirrored to the others under `<region>.`). */
  rollupTopic: string;
  /** pids of every process started (brokers, redis-servers, MirrorMaker 2), for orphan checks. */
  pids: number[];
  stop(): Promise<void>;
}

export interface LocalRegionsOptions {
  programs: Programs;
  names: readonly string[];
  topicPrefix?: string;
  /** Quicker JVM start for tests (see LocalKafkaOptions.quickStart). */
  quickStart?: boolean;
  log?: Logger;
}

/** `east,west` → ['east', 'west'], refusing what MirrorMaker 2 could not use as cluster aliases. */
export function parseRegionNames(text: string): string[] {
  const names = text.split(',').map((s) => s.trim());
  const bad = names.find((n) => !/^[a-z][a-z0-9-]{0,31}$/.test(n));
  if (bad !== undefined || names.length < 2 || names.length > 4 || new Set(names).size !== names.length) {
    throw new QuotaflowError('USAGE', `--regions ${JSON.stringify(text)} is not 2 to 4 different lower-case names, comma-separated`, {
      hint: 'e.g. --regions east,west (a name prefixes the topics mirrored from its region)',
    });
  }
  return names;
}

export async function startLocalRegions(options: LocalRegionsOptions): Promise<LocalRegions> {
  const log = options.log ?? logger('stack.regions');
  const topics = topicNames(options.topicPrefix ?? '');
  const started: LocalRegion[] = [];
  const stoppers: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stoppers.reverse()) await stop().catch((e) => log.warn('stopping a service failed', { error: e }));
  };
  try {
    // One region at a time: two brokers starting at once on 2 cores take longer than one after the other.
    for (const name of options.names) {
      const [kafka, redis] = await Promise.all([
        startLocalKafka({ programs: options.programs, quickStart: options.quickStart, log: log.child(`${name}.kafka`) }),
        startLocalRedis({ programs: options.programs, log: log.child(`${name}.redis`) }),
      ]);
      stoppers.push(
        () => kafka.stop(),
        () => redis.stop(),
      );
      const admin = kafkaPort({ brokers: kafka.brokers, clientId: 'quotaflow-stack', minLogLevel: 'error' }).admin();
      await admin.connect();
      try {
        await ensureTopics(admin, topicSpecs(topics));
      } finally {
        await admin.disconnect();
      }
      started.push({ name, brokers: kafka.brokers, redisUrl: redis.url, kafka, redis });
      log.info('region up', { region: name, brokers: kafka.brokers.join(','), redis: redis.url });
    }
    const mirrorMaker = await startMirrorMaker({
      programs: options.programs,
      regions: started.map((r) => ({ name: r.name, brokers: r.brokers })),
      topics: [topics.rollup],
      log: log.child('mirror-maker'),
    });
    stoppers.push(() => mirrorMaker.stop());
    const pids = started.flatMap((r) => [...r.kafka.nodes.map((n) => n.process.pid), r.redis.process.pid]);
    return {
      regions: started,
      mirrorMaker,
      rollupTopic: topics.rollup,
      get pids() {
        return [...pids, mirrorMaker.process.pid];
      },
      stop: stopAll,
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}
