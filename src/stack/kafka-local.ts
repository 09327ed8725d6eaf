/**
 * A real Apache Kafka broker without Docker: the broker jars come from Maven Central
 * (ops/kafka/pom.xml, fetched once into ops/kafka/lib) and run on the local JDK in KRaft mode on
 * 127.0.0.1. One node is a combined broker+controller; three nodes form a static quorum with the
 * same cluster id (for fault tests). Every node's JVM is a managed process (see process.ts).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { QuotaflowError } from '../errors.ts';
import { logger, type Logger } from '../log.ts';
import { waitForCluster, waitForGroupCoordinator } from '../kafka/client.ts';
import { KAFKA_LIB_DIR, KAFKA_OPS_DIR } from './paths.ts';
import { freePort, isPortFree } from './ports.ts';
import { checkJava, checkMaven, type Programs } from './prereqs.ts';
import { startManaged, type ManagedProcess } from './process.ts';

const run = promisify(execFile);

export interface LocalKafkaOptions {
  programs: Programs;
  /** 1 (combined broker+controller) or more (a static quorum, every node both roles). */
  nodes?: number;
  /** Fixed broker ports, one per node; default: free ports picked by the OS. */
  brokerPorts?: number[];
  heapMb?: number;
  startTimeoutMs?: number;
  log?: Logger;
  /**
   * Start faster at the cost of peak throughput: C1-only JIT and the serial GC. Right for test
   * clusters on small machines (three JVMs starting on two cores); wrong for benchmarks.
   */
  quickStart?: boolean;
  /** Extra server.properties entries for every node. */
  overrides?: Record<string, string | number | boolean>;
}

export interface LocalKafkaNode {
  readonly nodeId: number;
  readonly brokerPort: number;
  readonly controllerPort: number;
  readonly dir: string;
  process: ManagedProcess;
}

export interface LocalKafkaCluster {
  readonly brokers: string[];
  readonly version: string;
  readonly clusterId: string;
  readonly nodes: LocalKafkaNode[];
  /** Stop every node and delete the data. */
  stop(): Promise<void>;
  /** Fault tests: SIGKILL one node, or restart a stopped one on the same ports and data. */
  killNode(nodeId: number): Promise<void>;
  startNode(nodeId: number): Promise<void>;
}

/** The Kafka version pinned in ops/kafka/pom.xml. */
export async function pinnedKafkaVersion(): Promise<string> {
  const pom = await readFile(join(KAFKA_OPS_DIR, 'pom.xml'), 'utf8');
  const version = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(pom)?.[1];
  if (!version) throw new QuotaflowError('CONFIG_INVALID', 'ops/kafka/pom.xml has no <kafka.version> property');
  return version;
}

/** The jars whose presence says ops/kafka/lib holds this version whole: the broker's and MirrorMaker 2's. */
export const MARKER_JARS = (version: string) => [`kafka_2.13-${version}.jar`, `connect-mirror-${version}.jar`];

/**
 * Makes sure ops/kafka/lib holds the pinned broker's and MirrorMaker 2's jars, running Maven once
 * if not (a lib fetched before MirrorMaker 2 was added is fetched again). The jars go
 * to a temporary folder first and are moved into place whole, so an interrupted fetch never leaves
 * a half-filled lib/ behind, and a version bump never mixes two versions on the classpath.
 */
export async function ensureKafkaJars(programs: Programs, log: Logger = logger('stack.kafka')): Promise<string> {
  const version = await pinnedKafkaVersion();
  if (MARKER_JARS(version).every((jar) => existsSync(join(KAFKA_LIB_DIR, jar)))) return version;
  await checkMaven(programs.mvn);
  const staging = `${KAFKA_LIB_DIR}.partial-${process.pid}`;
  log.info('fetching the Kafka broker and MirrorMaker 2 jars from Maven Central (once)', { version, into: KAFKA_LIB_DIR });
  const started = Date.now();
  try {
    await run(
      programs.mvn,
      [
        '-B',
        '-q',
        '-f',
        join(KAFKA_OPS_DIR, 'pom.xml'),
        'org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies',
        '-DincludeScope=runtime',
        `-DoutputDirectory=${staging}`,
      ],
      { timeout: 10 * 60_000, maxBuffer: 16 * 1024 * 1024 },
    );
  } catch (e) {
    await rm(staging, { recursive: true, force: true });
    const err = e as { stdout?: string; stderr?: string };
    throw new QuotaflowError('SERVICE_START_FAILED', `Maven could not fetch the Kafka ${version} jars.\n${(err.stdout ?? '') + (err.stderr ?? '')}`.trim(), {
      retriable: true,
      hint: 'check that Maven Central is reachable (`mvn -f ops/kafka/pom.xml dependency:resolve`), or set KAFKA_BROKERS to use an existing Kafka',
      cause: e,
    });
  }
  await rm(KAFKA_LIB_DIR, { recursive: true, force: true });
  await rename(staging, KAFKA_LIB_DIR);
  log.info('Kafka broker jars ready', { version, jars: (await readdir(KAFKA_LIB_DIR)).length, ms: Date.now() - started });
  return version;
}

/** A Kafka cluster id: 16 random bytes, base64url, as `kafka-storage random-uuid` makes them. */
export function randomClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id; // Kafka's own generator avoids ids that look like CLI flags
  }
}

/** log4j2 settings for a Kafka JVM (broker or MirrorMaker 2): INFO and up into `<kafka.logs.dir>/<fileName>`. */
export function log4j2Properties(fileName: string): string {
  return `status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = \${sys:kafka.logs.dir}/${fileName}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
`;
}

function serverProperties(
  node: { nodeId: number; brokerPort: number; controllerPort: number; dir: string },
  voters: string,
  n: number,
  overrides: Record<string, string | number | boolean>,
): string {
  const rf = Math.min(n, 3);
  const props: Record<string, string | number | boolean> = {
    'process.roles': 'broker,controller',
    'node.id': node.nodeId,
    'controller.quorum.voters': voters,
    listeners: `PLAINTEXT://127.0.0.1:${node.brokerPort},CONTROLLER://127.0.0.1:${node.controllerPort}`,
    'advertised.listeners': `PLAINTEXT://127.0.0.1:${node.brokerPort}`,
    'controller.listener.names': 'CONTROLLER',
    'inter.broker.listener.name': 'PLAINTEXT',
    'listener.security.protocol.map': 'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
    'log.dirs': join(node.dir, 'data'),
    'num.partitions': 1,
    'default.replication.factor': rf,
    'min.insync.replicas': 1,
    'offsets.topic.replication.factor': rf,
    'offsets.topic.num.partitions': 10, // fewer than the default 50: the first consumer group is ready sooner
    'transaction.state.log.replication.factor': rf,
    'transaction.state.log.min.isr': 1,
    'transaction.state.log.num.partitions': 10,
    'share.coordinator.state.topic.replication.factor': rf,
    'share.coordinator.state.topic.min.isr': 1,
    'group.initial.rebalance.delay.ms': 0,
    // quotaflow creates its topics with their partitions and compaction (`quotaflow topics create`);
    // an auto-created topic would silently have the wrong settings.
    'auto.create.topics.enable': false,
    ...overrides,
  };
  return (
    Object.entries(props)
      .map(([k, v]) => `${k}=${v}`)
      .join('\n') + '\n'
  );
}

/** The last lines of a log file, for an error message ('(no log)' when there is none). */
export async function tail(file: string, lines = 30): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export async function startLocalKafka(options: LocalKafkaOptions): Promise<LocalKafkaCluster> {
  const log = options.log ?? logger('stack.kafka');
  const n = options.nodes ?? 1;
  const heapMb = options.heapMb ?? (n === 1 ? 512 : 384);
  const startTimeoutMs = options.startTimeoutMs ?? 90_000;
  await checkJava(options.programs.java);
  const version = await ensureKafkaJars(options.programs, log);

  if (options.brokerPorts) {
    for (const port of options.brokerPorts) {
      if (!(await isPortFree(port))) {
        throw new QuotaflowError('PORT_IN_USE', `port ${port} on 127.0.0.1 is already taken, so the local Kafka broker cannot listen there.`, {
          hint: `stop whatever listens on ${port} (\`ss -ltnp 'sport = :${port}'\` shows it), or let quotaflow pick a free port`,
        });
      }
    }
  }

  const root = await mkdtemp(join(tmpdir(), 'quotaflow-kafka-'));
  const clusterId = randomClusterId();
  const nodes: LocalKafkaNode[] = [];
  for (let i = 0; i < n; i++) {
    const dir = join(root, `node-${i + 1}`);
    await mkdir(dir, { recursive: true });
    nodes.push({
      nodeId: i + 1,
      brokerPort: options.brokerPorts?.[i] ?? (await freePort()),
      controllerPort: await freePort(),
      dir,
      process: undefined as unknown as ManagedProcess,
    });
  }
  const voters = nodes.map((x) => `${x.nodeId}@127.0.0.1:${x.controllerPort}`).join(',');
  const classpath = join(KAFKA_LIB_DIR, '*');
  const java = options.programs.java;
  const quick = ['-XX:TieredStopAtLevel=1', '-XX:+UseSerialGC'];
  const gc = options.quickStart ? quick : ['-XX:+UseG1GC', '-XX:MaxGCPauseMillis=20'];

  await Promise.all(
    nodes.map(async (node) => {
      await writeFile(join(node.dir, 'server.properties'), serverProperties(node, voters, n, options.overrides ?? {}));
      await writeFile(join(node.dir, 'log4j2.properties'), log4j2Properties('server.log'));
      try {
        await run(
          java,
          [
            '-Xmx256m',
            ...quick,
            '-cp',
            classpath,
            `-Dlog4j2.configurationFile=${join(node.dir, 'log4j2.properties')}`,
            `-Dkafka.logs.dir=${node.dir}`,
            'kafka.tools.StorageTool',
            'format',
            '-t',
            clusterId,
            '-c',
            join(node.dir, 'server.properties'),
          ],
          { timeout: 120_000 },
        );
      } catch (e) {
        const err = e as { stdout?: string; stderr?: string };
        throw new QuotaflowError(
          'SERVICE_START_FAILED',
          `formatting the KRaft log dir of node ${node.nodeId} failed:\n${(err.stdout ?? '') + (err.stderr ?? '')}`.trim(),
          {
            hint: `delete ${KAFKA_LIB_DIR} so the jars are fetched again, then retry`,
            cause: e,
          },
        );
      }
    }),
  );

  const launch = (node: LocalKafkaNode) => {
    node.process = startManaged(
      `kafka-${node.nodeId}`,
      java,
      [
        `-Xms${heapMb}m`,
        `-Xmx${heapMb}m`,
        ...gc,
        '-XX:+ExitOnOutOfMemoryError',
        '-Djava.awt.headless=true',
        `-Dlog4j2.configurationFile=${join(node.dir, 'log4j2.properties')}`,
        `-Dkafka.logs.dir=${node.dir}`,
        '-cp',
        classpath,
        'kafka.Kafka',
        join(node.dir, 'server.properties'),
      ],
      { logFile: join(node.dir, 'stdout.log') },
    );
  };

  const describeFailure = async (node: LocalKafkaNode): Promise<QuotaflowError> => {
    const logText = (await tail(join(node.dir, 'server.log'), 40)) + '\n' + (await tail(join(node.dir, 'stdout.log'), 20));
    if (/Address already in use/i.test(logText)) {
      return new QuotaflowError(
        'PORT_IN_USE',
        `Kafka node ${node.nodeId} could not bind its ports (${node.brokerPort}, ${node.controllerPort}): another program took one.`,
        {
          retriable: true,
          hint: 'run the command again (free ports are picked anew), or stop the program holding the port',
        },
      );
    }
    return new QuotaflowError('SERVICE_START_FAILED', `Kafka node ${node.nodeId} stopped during start-up. Last lines of ${node.dir}/server.log:\n${logText}`, {
      hint: `read ${join(node.dir, 'server.log')}; if the jars are damaged, delete ${KAFKA_LIB_DIR} and retry`,
    });
  };

  const started = Date.now();
  nodes.forEach(launch);
  const brokers = nodes.map((x) => `127.0.0.1:${x.brokerPort}`);
  const stopAll = async () => {
    await Promise.all(nodes.map((x) => x.process.stop()));
  };
  try {
    await waitForCluster(brokers, {
      expectedBrokers: n,
      timeoutMs: startTimeoutMs,
      isAlive: () => nodes.every((x) => x.process.isRunning()),
    });
    await waitForGroupCoordinator(brokers, Math.max(5_000, startTimeoutMs - (Date.now() - started)));
  } catch (e) {
    const dead = nodes.find((x) => !x.process.isRunning());
    await stopAll();
    if (dead) throw await describeFailure(dead);
    throw new QuotaflowError('TIMEOUT', `the local Kafka cluster did not answer within ${startTimeoutMs / 1000}s (logs under ${root}).`, {
      retriable: true,
      hint: 'the machine may be overloaded; retry, or read the server.log files named above',
      cause: e,
    });
  }
  log.info('local Kafka ready', { version, brokers: brokers.join(','), nodes: n, clusterId, ms: Date.now() - started, dir: root });

  const byId = (id: number) => {
    const node = nodes.find((x) => x.nodeId === id);
    if (!node) throw new QuotaflowError('USAGE', `no Kafka node ${id} in this cluster (nodes 1..${n})`);
    return node;
  };
  return {
    brokers,
    version,
    clusterId,
    nodes,
    async stop() {
      await stopAll();
      await rm(root, { recursive: true, force: true });
      log.info('local Kafka stopped', { brokers: brokers.join(',') });
    },
    async killNode(id) {
      await byId(id).process.kill();
    },
    async startNode(id) {
      const node = byId(id);
      if (node.process.isRunning()) return;
      launch(node);
    },
  };
}
