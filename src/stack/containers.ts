/**
 * The path for machines with a Docker engine: the official apache/kafka image in KRaft mode and
 * redis, started with testcontainers (its Ryuk sidecar removes them even if we crash). The image
 * tags follow the versions the local path runs. Not exercised on machines without Docker.
 */
import { request } from 'node:http';
import { existsSync } from 'node:fs';
import { logger, type Logger } from '../log.ts';
import { waitForCluster } from '../kafka/client.ts';
import { freePort } from './ports.ts';
import { pinnedKafkaVersion } from './kafka-local.ts';

/** True when a Docker engine answers `GET /_ping` within a second (unix socket or DOCKER_HOST tcp). */
export async function dockerEngineAnswers(env: NodeJS.ProcessEnv): Promise<boolean> {
  const host = env.DOCKER_HOST;
  let target: { socketPath: string } | { host: string; port: number };
  if (host?.startsWith('tcp://')) {
    const url = new URL(host.replace('tcp://', 'http://'));
    target = { host: url.hostname, port: Number(url.port || 2375) };
  } else {
    const socketPath = host?.startsWith('unix://') ? host.slice('unix://'.length) : '/var/run/docker.sock';
    if (!existsSync(socketPath)) return false;
    target = { socketPath };
  }
  return new Promise((resolve) => {
    const req = request({ ...target, path: '/_ping', method: 'GET', timeout: 1_000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

export interface ContainerStack {
  brokers: string[];
  redisUrl: string;
  kafkaVersion: string;
  stop(): Promise<void>;
}

export async function startContainers(log: Logger = logger('stack.containers')): Promise<ContainerStack> {
  const { GenericContainer, Wait } = await import('testcontainers');
  const version = await pinnedKafkaVersion();
  // A fixed host port, so the broker can advertise the address clients will reach it on.
  const kafkaPort = await freePort();
  const kafka = await new GenericContainer(`apache/kafka:${version}`)
    .withExposedPorts({ container: 9092, host: kafkaPort })
    .withEnvironment({
      KAFKA_NODE_ID: '1',
      KAFKA_PROCESS_ROLES: 'broker,controller',
      KAFKA_LISTENERS: 'PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093',
      KAFKA_ADVERTISED_LISTENERS: `PLAINTEXT://127.0.0.1:${kafkaPort}`,
      KAFKA_CONTROLLER_LISTENER_NAMES: 'CONTROLLER',
      KAFKA_LISTENER_SECURITY_PROTOCOL_MAP: 'CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT',
      KAFKA_CONTROLLER_QUORUM_VOTERS: '1@127.0.0.1:9093',
      KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR: '1',
      KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS: '10',
      KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
      KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR: '1',
      KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR: '1',
      KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
      KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'false',
    })
    .withWaitStrategy(Wait.forListeningPorts())
    .start();
  const redis = await new GenericContainer('redis:7-alpine')
    .withExposedPorts(6379)
    .withCommand(['redis-server', '--save', '', '--appendonly', 'no'])
    .withWaitStrategy(Wait.forLogMessage('Ready to accept connections'))
    .start();
  const brokers = [`127.0.0.1:${kafkaPort}`];
  await waitForCluster(brokers, { timeoutMs: 90_000 });
  const redisUrl = `redis://${redis.getHost()}:${redis.getMappedPort(6379)}`;
  log.info('containers ready', { kafka: `apache/kafka:${version}`, brokers: brokers.join(','), redisUrl });
  return {
    brokers,
    redisUrl,
    kafkaVersion: version,
    async stop() {
      await Promise.allSettled([kafka.stop(), redis.stop()]);
    },
  };
}
