/**
 * The kafkajs adapter behind the Kafka port (src/kafka/port.ts): the one place kafkajs is imported
 * and configured. kafkajs's own log lines go to our structured logger.
 */
import { randomBytes } from 'node:crypto';
import kafkajs, { type EachBatchPayload, type IHeaders, type KafkaMessage, type LogEntry, type Message } from 'kafkajs';
import { logger } from '../../log.ts';
import type {
  Admin,
  GroupConsumer,
  GroupConsumerOptions,
  GroupRunOptions,
  IncomingRecord,
  KafkaPort,
  KafkaSettings,
  OutgoingRecord,
  PartitionReader,
  Producer,
  ProducerOptions,
  ReadOptions,
} from '../port.ts';

// CommonJS: Node's named ESM imports of kafkajs miss some of its exports.
const { CompressionTypes, ConfigResourceTypes, Kafka, logLevel } = kafkajs;
type Kafka = InstanceType<typeof Kafka>;

// kafkajs warns on every producer about a partitioner change made in 2.0; we choose explicitly.
process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';

const LEVELS: Record<NonNullable<KafkaSettings['minLogLevel']>, kafkajs.logLevel> = {
  nothing: logLevel.NOTHING,
  error: logLevel.ERROR,
  warn: logLevel.WARN,
  info: logLevel.INFO,
  debug: logLevel.DEBUG,
};

function client(settings: KafkaSettings): Kafka {
  const log = logger('kafkajs');
  const retry = settings.retry ?? { retries: 8, initialRetryMs: 200, maxRetryMs: 5_000 };
  return new Kafka({
    clientId: settings.clientId,
    brokers: settings.brokers,
    connectionTimeout: settings.connectionTimeoutMs ?? 3_000,
    retry: { retries: retry.retries, initialRetryTime: retry.initialRetryMs ?? 200, maxRetryTime: retry.maxRetryMs ?? 5_000 },
    logLevel: LEVELS[settings.minLogLevel ?? 'warn'],
    logCreator:
      () =>
      ({ namespace, level, log: entry }: LogEntry) => {
        const { message, ...fields } = entry;
        const f = { namespace, ...fields };
        // kafkajs logs every error response it is about to retry (a coordinator still loading, a
        // leader moving) at ERROR; the operation's own failure surfaces as a thrown error if retries
        // run out, so these are debug detail.
        if (namespace === 'Connection' && message.startsWith('Response ')) log.debug(message, f);
        // Our idempotent producers bound their retries on purpose (see ProducerOptions): kafkajs warns
        // about that on every start, which reads like a fault to an operator.
        else if (message.startsWith('Limiting retries for the idempotent producer')) log.debug(message, f);
        else if (level === logLevel.ERROR) log.error(message, f);
        else if (level === logLevel.WARN) log.warn(message, f);
        else if (level === logLevel.INFO) log.info(message, f);
        else log.debug(message, f);
      },
  });
}

const byPartition = <T extends { partition: number }>(xs: T[]): T[] => xs.sort((a, b) => a.partition - b.partition);

function toIncoming(m: KafkaMessage): IncomingRecord {
  return {
    offset: Number(m.offset),
    key: m.key,
    value: m.value,
    timestamp: Number(m.timestamp),
    headers: (m.headers ?? {}) as Record<string, Buffer | undefined>,
  };
}

function toMessage(r: OutgoingRecord): Message {
  const m: Message = { key: r.key, value: r.value, headers: r.headers as IHeaders | undefined };
  if (r.timestamp !== undefined) m.timestamp = String(r.timestamp);
  if (r.partition !== undefined) m.partition = r.partition;
  return m;
}

export class KafkajsPort implements KafkaPort {
  readonly client = 'kafkajs' as const;
  readonly brokers: readonly string[];
  private readonly kafka: Kafka;

  constructor(settings: KafkaSettings) {
    this.brokers = settings.brokers;
    this.kafka = client(settings);
  }

  producer(opts: ProducerOptions = {}): Producer {
    const idempotent = opts.idempotent ?? true;
    const producer = this.kafka.producer({
      idempotent,
      // kafkajs's idempotent producer numbers its batches; more than one request in flight breaks that.
      ...(idempotent ? { maxInFlightRequests: 1 } : {}),
      ...(opts.retries === undefined
        ? {}
        : { retry: { retries: opts.retries, initialRetryTime: opts.initialRetryMs ?? 100, maxRetryTime: opts.maxRetryMs ?? 10_000 } }),
    });
    return {
      connect: () => producer.connect(),
      disconnect: () => producer.disconnect(),
      send: async (records, sendOpts) => {
        const byTopic = new Map<string, Message[]>();
        for (const r of records) {
          let messages = byTopic.get(r.topic);
          if (!messages) byTopic.set(r.topic, (messages = []));
          messages.push(toMessage(r));
        }
        await producer.sendBatch({
          acks: -1,
          compression: sendOpts?.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
          topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
        });
      },
    };
  }

  consumer(opts: GroupConsumerOptions): GroupConsumer {
    const session = opts.sessionTimeoutMs ?? 30_000;
    const consumer = this.kafka.consumer({
      groupId: opts.groupId,
      sessionTimeout: session,
      heartbeatInterval: opts.heartbeatIntervalMs ?? Math.min(3_000, Math.floor(session / 3)),
      ...(opts.maxBytesPerPartition === undefined ? {} : { maxBytesPerPartition: opts.maxBytesPerPartition }),
    });
    return {
      run: async (run: GroupRunOptions) => {
        await consumer.connect();
        consumer.on(consumer.events.GROUP_JOIN, (e) => run.onAssigned?.(e.payload.memberAssignment[run.topic] ?? []));
        consumer.on(consumer.events.CRASH, (e) => run.onError?.(e.payload.error, e.payload.restart));
        await consumer.subscribe({ topic: run.topic, fromBeginning: run.fromBeginning });
        await consumer.run({
          autoCommit: false,
          eachBatchAutoResolve: false,
          partitionsConsumedConcurrently: run.partitionsConcurrently,
          eachBatch: ({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload) => {
            if (batch.messages.length === 0) return Promise.resolve();
            return run.onBatch({
              topic: batch.topic,
              partition: batch.partition,
              records: batch.messages.map(toIncoming),
              highWatermark: Number(batch.highWatermark),
              heartbeat,
              isActive: () => isRunning() && !isStale(),
              commit: async (next) => {
                resolveOffset(String(next - 1));
                await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: String(next) }]);
              },
            });
          },
        });
      },
      stop: async () => {
        await consumer.stop();
        await consumer.disconnect();
      },
    };
  }

  read(
    topic: string,
    starts: ReadonlyMap<number, number>,
    onBatch: (partition: number, records: IncomingRecord[]) => Promise<void> | void,
    opts: ReadOptions = {},
  ): PartitionReader {
    // kafkajs has no assignment without a group: a throwaway group, a seek to each start after every
    // join (a restart begins again from the beginning), and records before the position dropped.
    const position = new Map(starts);
    let stopped = false;
    const consumer = this.kafka.consumer({
      groupId: `${opts.label ?? 'quotaflow-reader'}-${randomBytes(6).toString('hex')}`,
      sessionTimeout: 10_000,
      heartbeatInterval: 3_000,
      ...(opts.maxBytesPerPartition === undefined ? {} : { maxBytesPerPartition: opts.maxBytesPerPartition }),
      // A disconnect while kafkajs is restarting a crashed consumer does not stop it
      // (tulios/kafkajs#1639): no restart once stopped, and a restart that got through is stopped again.
      retry: { retries: Number.MAX_SAFE_INTEGER, initialRetryTime: 300, maxRetryTime: 5_000, restartOnFailure: async () => !stopped },
    });
    consumer.on(consumer.events.FETCH_START, () => {
      if (stopped) void consumer.disconnect().catch(() => {});
    });
    const seekAll = () => {
      for (const [partition, offset] of position) consumer.seek({ topic, partition, offset: String(offset) });
    };
    let runs = 0;
    consumer.on(consumer.events.GROUP_JOIN, () => {
      if (runs++ > 0) seekAll(); // the first join is followed by the seek below
    });
    consumer.on(consumer.events.CRASH, (e) => opts.onError?.(e.payload.error, e.payload.restart && !stopped));
    const started = (async () => {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        eachBatch: async ({ batch, isRunning, isStale }) => {
          const at = position.get(batch.partition);
          if (at === undefined || stopped) return;
          const records: IncomingRecord[] = [];
          for (const m of batch.messages) {
            if (!isRunning() || isStale()) break;
            // Before a seek takes hold a fetch may start at the beginning: what is before the position is not handed over.
            if (Number(m.offset) >= at) records.push(toIncoming(m));
          }
          if (records.length === 0) return;
          position.set(batch.partition, records[records.length - 1]!.offset + 1);
          await onBatch(batch.partition, records);
        },
      });
      seekAll();
    })();
    return {
      started,
      stop: async () => {
        stopped = true;
        await started.catch(() => {});
        await consumer.disconnect().catch(() => {});
      },
    };
  }

  admin(): Admin {
    const admin = this.kafka.admin();
    return {
      connect: () => admin.connect(),
      disconnect: () => admin.disconnect(),
      listTopics: () => admin.listTopics(),
      createTopics: async (specs) => {
        await admin.createTopics({
          waitForLeaders: false,
          topics: specs.map((s) => ({
            topic: s.topic,
            numPartitions: s.partitions,
            replicationFactor: s.replicationFactor,
            configEntries: Object.entries(s.configs).map(([name, value]) => ({ name, value })),
          })),
        });
      },
      deleteTopics: (topics) => admin.deleteTopics({ topics: [...topics] }),
      topicMetadata: async (topics) =>
        (await admin.fetchTopicMetadata({ topics: [...topics] })).topics.map((t) => ({
          topic: t.name,
          partitions: t.partitions.map((p) => ({ partition: p.partitionId, leader: p.leader, replicas: p.replicas })),
        })),
      topicConfigs: async (topics, names) => {
        const { resources } = await admin.describeConfigs({
          includeSynonyms: false,
          resources: topics.map((name) => ({ type: ConfigResourceTypes.TOPIC, name, configNames: [...names] })),
        });
        return new Map(resources.map((r) => [r.resourceName, new Map(r.configEntries.map((c) => [c.configName, c.configValue]))]));
      },
      // kafkajs answers in no particular partition order; the port's answers are by partition.
      offsets: async (topic) =>
        byPartition((await admin.fetchTopicOffsets(topic)).map((p) => ({ partition: p.partition, low: Number(p.low), high: Number(p.high) }))),
      offsetsAt: async (topic, at) =>
        byPartition((await admin.fetchTopicOffsetsByTimestamp(topic, at)).map((p) => ({ partition: p.partition, offset: Number(p.offset) }))),
      committedOffsets: async (groupId, topic) => {
        const groups = await admin.fetchOffsets({ groupId, topics: [topic] });
        return byPartition((groups[0]?.partitions ?? []).map((p) => ({ partition: p.partition, offset: Number(p.offset) })));
      },
      groupMembers: async (groupId) => (await admin.describeGroups([groupId])).groups[0]?.members.length ?? 0,
      deleteGroups: async (groupIds) => {
        await admin.deleteGroups([...groupIds]);
      },
      cluster: async () => {
        const c = await admin.describeCluster();
        return { brokers: c.brokers.length, controller: c.controller, clusterId: c.clusterId };
      },
    };
  }
}
