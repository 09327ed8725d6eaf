/**
 * Apache Kafka's MirrorMaker 2 between local clusters, one per region: a dedicated
 * `org.apache.kafka.connect.mirror.MirrorMaker` JVM from the broker's own lib (ops/kafka/pom.xml),
 * every flow between every two regions enabled, mirroring only the topics named (the rollups).
 *
 * With the default replication policy a topic `T` of region `east` arrives on `west` as `east.T`,
 * so a region's own topic and its copies of the others' can never be confused, and nothing loops.
 *
 * The settings (each checked against what MirrorMaker 2 logs as effective):
 *  - worker settings go under the *target* cluster's alias (MirrorMakerConfig builds each herder's
 *    worker config from `<target>.*`): offsets committed every second, so a restart after SIGKILL
 *    re-sends ~1 s of records instead of up to a minute; the ServiceLoader plugin discovery, not
 *    three reflective classpath scans (seconds and ~450 MB at start);
 *  - the producer's linger.ms 0 (Kafka 4's default of 5 ms is added to every mirrored record);
 *  - replication factor 1 everywhere for single-broker clusters;
 *  - `heartbeats` is created on every cluster before the start, as the topics to mirror must be:
 *    a flow lists its source's topics once at start and again only every refresh interval.
 *
 * Ready means every flow moves records: each target holds records of `<source>.heartbeats`, which
 * MirrorMaker 2 emits every second on every source and mirrors whatever `topics` says.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QuotaflowError } from '../errors.ts';
import { kafkaPort } from '../kafka/client.ts';
import { ensureTopics } from '../kafka/topics.ts';
import { logger, type Logger } from '../log.ts';
import { ensureKafkaJars, log4j2Properties, tail } from './kafka-local.ts';
import { KAFKA_LIB_DIR } from './paths.ts';
import { checkJava, type Programs } from './prereqs.ts';
import { startManaged, type ManagedProcess } from './process.ts';

export interface MirrorRegion {
  /** The region's alias: MirrorMaker 2's cluster name, and the prefix of its topics elsewhere. */
  name: string;
  brokers: string[];
}

export interface MirrorMakerOptions {
  programs: Programs;
  regions: readonly MirrorRegion[];
  /** Exact names of the topics to mirror (they must exist on every region's cluster). */
  topics: readonly string[];
  /** How long to wait for every flow to move records (default 120 s: a shared 2-core machine at load 10 took 42 s). */
  startTimeoutMs?: number;
  heapMb?: number;
  log?: Logger;
}

export interface LocalMirrorMaker {
  readonly regions: readonly MirrorRegion[];
  readonly version: string;
  /** Where its properties and mm2.log are. */
  readonly dir: string;
  readonly process: ManagedProcess;
  /** SIGTERM (it commits its offsets, 3–5 s), then remove its directory. Idempotent. */
  stop(): Promise<void>;
  /** Fault tests: SIGKILL the JVM (it re-sends what it had not committed when started again). */
  kill(): Promise<void>;
  /** Start it again after `kill` (or a stop without cleanup), and wait until every flow moves records. */
  restart(): Promise<void>;
}

const ALIAS = /^[a-z][a-z0-9-]{0,31}$/;

/** A regex matching exactly `name`, written for a .properties file (whose reader eats one backslash). */
export function exactTopicPattern(name: string): string {
  return regexLiteral(name).replaceAll('\\', '\\\\');
}

/** A regex source matching exactly `text`. */
export function regexLiteral(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export function mirrorMakerProperties(regions: readonly MirrorRegion[], topics: readonly string[]): string {
  const lines: string[] = [
    `clusters = ${regions.map((r) => r.name).join(', ')}`,
    ...regions.map((r) => `${r.name}.bootstrap.servers = ${r.brokers.join(',')}`),
  ];
  for (const src of regions) {
    for (const dst of regions) {
      if (src === dst) continue;
      lines.push(`${src.name}->${dst.name}.enabled = true`, `${src.name}->${dst.name}.producer.override.linger.ms = 0`);
    }
  }
  lines.push(
    `topics = ${topics.map(exactTopicPattern).join('|')}`,
    'groups = ^$',
    'refresh.topics.interval.seconds = 10',
    'replication.factor = 1',
    'checkpoints.topic.replication.factor = 1',
    'heartbeats.topic.replication.factor = 1',
    'offset-syncs.topic.replication.factor = 1',
    'config.storage.replication.factor = 1',
    'offset.storage.replication.factor = 1',
    'status.storage.replication.factor = 1',
    'offset.storage.partitions = 1',
    'status.storage.partitions = 1',
    'sync.topic.acls.enabled = false',
    'sync.group.offsets.enabled = false',
    'emit.checkpoints.enabled = false',
    'emit.heartbeats.enabled = true',
    'plugin.discovery = service_load',
  );
  for (const r of regions) lines.push(`${r.name}.plugin.discovery = service_load`, `${r.name}.offset.flush.interval.ms = 1000`);
  return lines.join('\n') + '\n';
}

/** Records of `<source>.heartbeats` on each target, per flow ("east->west": n). */
export async function heartbeatsSeen(regions: readonly MirrorRegion[]): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  for (const dst of regions) {
    const admin = kafkaPort({ brokers: dst.brokers, clientId: 'quotaflow-mm2-probe', minLogLevel: 'nothing', retry: { retries: 1 } }).admin();
    await admin.connect();
    try {
      const topics = new Set(await admin.listTopics());
      for (const src of regions) {
        if (src === dst) continue;
        const topic = `${src.name}.heartbeats`;
        // Asking the offsets of a topic that does not exist yet retries for minutes: look first.
        const n = topics.has(topic) ? (await admin.offsets(topic)).reduce((sum, p) => sum + p.high - p.low, 0) : 0;
        seen.set(`${src.name}->${dst.name}`, n);
      }
    } finally {
      await admin.disconnect();
    }
  }
  return seen;
}

export async function startMirrorMaker(options: MirrorMakerOptions): Promise<LocalMirrorMaker> {
  const log = options.log ?? logger('stack.mirror-maker');
  const { regions, topics } = options;
  if (regions.length < 2) throw new QuotaflowError('USAGE', 'MirrorMaker 2 needs at least two regions', { hint: 'e.g. --regions east,west' });
  for (const r of regions) {
    if (!ALIAS.test(r.name)) {
      throw new QuotaflowError('USAGE', `region name ${JSON.stringify(r.name)} is not a lower-case word (letters, digits, '-')`, {
        hint: 'region names prefix the topics mirrored from them, e.g. east, west, eu-1',
      });
    }
  }
  if (new Set(regions.map((r) => r.name)).size !== regions.length) throw new QuotaflowError('USAGE', 'region names must differ');
  await checkJava(options.programs.java);
  const version = await ensureKafkaJars(options.programs, log);

  // Created before the start: a flow lists its source's topics once at start, then every 10 s.
  for (const r of regions) {
    const admin = kafkaPort({ brokers: r.brokers, clientId: 'quotaflow-mm2-setup', minLogLevel: 'error' }).admin();
    await admin.connect();
    try {
      const present = new Set(await admin.listTopics());
      const missing = topics.filter((t) => !present.has(t));
      if (missing.length) {
        throw new QuotaflowError('PRECONDITION_FAILED', `region ${r.name} has no topic ${missing.join(', ')} to mirror`, {
          hint: `create the topics first (\`quotaflow topics create\` against ${r.brokers.join(',')})`,
        });
      }
      await ensureTopics(admin, [{ topic: 'heartbeats', partitions: 1, replicationFactor: -1, configs: { 'cleanup.policy': 'compact' } }]);
    } finally {
      await admin.disconnect();
    }
  }

  const dir = await mkdtemp(join(tmpdir(), 'quotaflow-mm2-'));
  await writeFile(join(dir, 'mm2.properties'), mirrorMakerProperties(regions, topics));
  await writeFile(join(dir, 'log4j2.properties'), log4j2Properties('mm2.log'));
  const heapMb = options.heapMb ?? 512;
  const startTimeoutMs = options.startTimeoutMs ?? 120_000;
  const launch = () =>
    startManaged(
      'mirror-maker',
      options.programs.java,
      [
        '-Xms256m',
        `-Xmx${heapMb}m`,
        '-XX:+UseG1GC',
        '-XX:MaxGCPauseMillis=20',
        '-XX:+ExitOnOutOfMemoryError',
        '-Djava.awt.headless=true',
        `-Dlog4j2.configurationFile=${join(dir, 'log4j2.properties')}`,
        `-Dkafka.logs.dir=${dir}`,
        '-cp',
        join(KAFKA_LIB_DIR, '*'),
        'org.apache.kafka.connect.mirror.MirrorMaker',
        join(dir, 'mm2.properties'),
      ],
      { logFile: join(dir, 'stdout.log') },
    );

  let jvm = launch();
  const waitReady = async () => {
    const started = Date.now();
    const before = await heartbeatsSeen(regions);
    for (;;) {
      if (!jvm.isRunning()) {
        throw new QuotaflowError(
          'SERVICE_START_FAILED',
          `MirrorMaker 2 stopped during start-up. Last lines of ${join(dir, 'mm2.log')}:\n${await tail(join(dir, 'mm2.log'))}\n${await tail(join(dir, 'stdout.log'))}`,
          {
            hint: `read ${join(dir, 'mm2.log')}; if the jars are damaged, delete ${KAFKA_LIB_DIR} and retry`,
          },
        );
      }
      const now = await heartbeatsSeen(regions).catch(() => new Map<string, number>());
      const waiting = [...before.keys()].filter((flow) => (now.get(flow) ?? 0) <= (before.get(flow) ?? 0));
      if (waiting.length === 0) {
        log.info('MirrorMaker 2 ready', { version, flows: [...before.keys()].join(' '), topics: topics.join(','), ms: Date.now() - started, dir });
        return;
      }
      if (Date.now() - started > startTimeoutMs) {
        throw new QuotaflowError(
          'TIMEOUT',
          `MirrorMaker 2 moved no heartbeat on ${waiting.join(', ')} within ${startTimeoutMs / 1000} s (logs under ${dir}).`,
          {
            retriable: true,
            hint: 'the machine may be overloaded; retry, or read mm2.log there',
          },
        );
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  try {
    await waitReady();
  } catch (e) {
    await jvm.stop(5_000);
    await rm(dir, { recursive: true, force: true });
    throw e;
  }

  let removed = false;
  return {
    regions,
    version,
    dir,
    get process() {
      return jvm;
    },
    async stop() {
      await jvm.stop();
      if (!removed) {
        removed = true;
        await rm(dir, { recursive: true, force: true });
        log.info('MirrorMaker 2 stopped', { regions: regions.map((r) => r.name).join(',') });
      }
    },
    async kill() {
      await jvm.kill();
    },
    async restart() {
      if (jvm.isRunning()) return;
      jvm = launch();
      await waitReady();
    },
  };
}
