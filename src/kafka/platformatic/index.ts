/**
 * The @platformatic/kafka adapter behind the Kafka port (src/kafka/port.ts): the one place that
 * library is imported. It is loaded on first use, so a process on kafkajs never loads it.
 *
 * The library consumes as a stream of single messages; the port hands over per-partition batches.
 * group.ts builds those; this file has the producer, the reader and the admin.
 */
import { randomBytes } from 'node:crypto';
import type { Admin as LibAdmin, Consumer as LibConsumer, Message as LibMessage, MessagesStream } from '@platformatic/kafka';
import type {
  Admin,
  GroupConsumer,
  GroupConsumerOptions,
  IncomingRecord,
  KafkaPort,
  KafkaSettings,
  PartitionReader,
  Producer,
  ProducerOptions,
  ReadOptions,
} from '../port.ts';
import { PlatformaticGroupConsumer } from './group.ts';
import { baseOptions, closeConsumer, lib, toIncoming, toMessage, type Lib } from './lib.ts';

export class PlatformaticPort implements KafkaPort {
  readonly client = 'platformatic' as const;
  readonly brokers: readonly string[];

  constructor(private readonly settings: KafkaSettings) {
    this.brokers = settings.brokers;
  }

  producer(opts: ProducerOptions = {}): Producer {
    const idempotent = opts.idempotent ?? true;
    let producer: InstanceType<Lib['Producer']> | undefined;
    return {
      connect: async () => {
        const { Producer: LibProducer, compatibilityPartitioner } = await lib();
        producer = new LibProducer({
          ...baseOptions(this.settings),
          idempotent,
          acks: -1,
          // The library's default partitioner reads murmur2 as unsigned, so about half the keys would
          // land on another partition than the Java client's (and kafkajs's) pick: see the port.
          partitioner: compatibilityPartitioner,
          ...(opts.retries === undefined ? {} : { retries: opts.retries, retryDelay: opts.initialRetryMs ?? 100 }),
        });
      },
      disconnect: async () => {
        await producer?.close();
        producer = undefined;
      },
      send: async (records, sendOpts) => {
        if (!producer) throw new Error('the producer is not connected');
        await producer.send({ messages: records.map(toMessage), acks: -1, compression: sendOpts?.compression === 'gzip' ? 'gzip' : 'none' });
      },
    };
  }

  consumer(opts: GroupConsumerOptions): GroupConsumer {
    return new PlatformaticGroupConsumer(this.settings, opts);
  }

  read(
    topic: string,
    starts: ReadonlyMap<number, number>,
    onBatch: (partition: number, records: IncomingRecord[]) => Promise<void> | void,
    opts: ReadOptions = {},
  ): PartitionReader {
    // The library reads from given offsets under a group of its own (a throwaway one, never committed
    // to): on a rejoin it keeps its positions, and records before the position are dropped all the same.
    const position = new Map(starts);
    let stopped = false;
    let consumer: LibConsumer<Buffer, Buffer, Buffer, Buffer> | undefined;
    let stream: MessagesStream<Buffer, Buffer, Buffer, Buffer> | undefined;
    // Messages arrive one by one; hand them over per partition, in order, one call at a time.
    const pending = new Map<number, IncomingRecord[]>();
    let draining: Promise<void> = Promise.resolve();
    let scheduled = false;
    const drain = async () => {
      scheduled = false;
      for (const [partition, records] of pending) {
        pending.delete(partition);
        if (!stopped) await onBatch(partition, records);
      }
    };
    const started = (async () => {
      const { Consumer } = await lib();
      consumer = new Consumer({
        ...baseOptions(this.settings),
        groupId: `${opts.label ?? 'quotaflow-reader'}-${randomBytes(6).toString('hex')}`,
        sessionTimeout: 10_000,
        heartbeatInterval: 3_000,
      });
      consumer.on('error', (e: unknown) => opts.onError?.(e, !stopped));
      const offsets = [...starts].map(([partition, offset]) => ({ topic, partition, offset: BigInt(offset) }));
      stream = await consumer.consume({
        topics: [topic],
        mode: 'manual',
        offsets,
        autocommit: false,
        ...(opts.maxBytesPerPartition === undefined ? {} : { maxBytesPerPartition: opts.maxBytesPerPartition }),
      });
      stream.on('error', (e: unknown) => opts.onError?.(e, false));
      stream.on('data', (m: LibMessage<Buffer, Buffer, Buffer, Buffer>) => {
        if (stopped) return;
        const at = position.get(m.partition);
        const offset = Number(m.offset);
        if (at === undefined || offset < at) return;
        position.set(m.partition, offset + 1);
        let records = pending.get(m.partition);
        if (!records) pending.set(m.partition, (records = []));
        records.push(toIncoming(m));
        if (!scheduled) {
          scheduled = true;
          // After this fetch's messages are all in: one call per partition, after the previous drain.
          setImmediate(() => (draining = draining.then(drain, drain)));
        }
      });
    })();
    return {
      started,
      stop: async () => {
        stopped = true;
        await started.catch(() => {});
        await draining.catch(() => {});
        await stream?.close().catch(() => {});
        await closeConsumer(consumer);
      },
    };
  }

  admin(): Admin {
    return new PlatformaticAdmin(this.settings);
  }
}

class PlatformaticAdmin implements Admin {
  private admin: LibAdmin | undefined;
  /** Offsets are listed through a consumer (the library's admin does not list them); it never joins a group. */
  private offsetsClient: LibConsumer<Buffer, Buffer, Buffer, Buffer> | undefined;

  constructor(private readonly settings: KafkaSettings) {}

  async connect(): Promise<void> {
    const { Admin: LibAdminClass } = await lib();
    const admin = new LibAdminClass(baseOptions(this.settings));
    // Connecting is lazy in the library: ask for the cluster, so a wrong address fails here.
    await admin.metadata({ topics: [] }).catch(async (e: unknown) => {
      await admin.close().catch(() => {});
      throw e;
    });
    this.admin = admin;
  }

  async disconnect(): Promise<void> {
    await Promise.all([this.admin?.close(), closeConsumer(this.offsetsClient)]);
    this.admin = undefined;
    this.offsetsClient = undefined;
  }

  private get a(): LibAdmin {
    if (!this.admin) throw new Error('the admin is not connected');
    return this.admin;
  }

  private async offsetsConsumer(): Promise<LibConsumer<Buffer, Buffer, Buffer, Buffer>> {
    if (!this.offsetsClient) {
      const { Consumer } = await lib();
      this.offsetsClient = new Consumer({ ...baseOptions(this.settings), groupId: `quotaflow-offsets-${randomBytes(6).toString('hex')}` });
    }
    return this.offsetsClient;
  }

  listTopics(): Promise<string[]> {
    return this.a.listTopics();
  }

  async createTopics(specs: Parameters<Admin['createTopics']>[0]): Promise<void> {
    // One request per topic: the library's request gives every topic in it the same partitions and replicas.
    for (const s of specs) {
      await this.a.createTopics({
        topics: [s.topic],
        partitions: s.partitions,
        replicas: s.replicationFactor,
        configs: Object.entries(s.configs).map(([name, value]) => ({ name, value })),
      });
    }
  }

  deleteTopics(topics: readonly string[]): Promise<void> {
    return this.a.deleteTopics({ topics: [...topics] });
  }

  async topicMetadata(topics: readonly string[]): Promise<Awaited<ReturnType<Admin['topicMetadata']>>> {
    const metadata = await this.a.metadata({ topics: [...topics], forceUpdate: true });
    return topics.map((topic) => {
      const t = metadata.topics.get(topic);
      if (!t) throw new Error(`the broker does not know topic ${topic}`);
      return { topic, partitions: t.partitions.map((p, partition) => ({ partition, leader: p.leader, replicas: p.replicas })) };
    });
  }

  async topicConfigs(topics: readonly string[], names: readonly string[]): Promise<Map<string, Map<string, string>>> {
    const { ConfigResourceTypes } = await lib();
    const described = await this.a.describeConfigs({
      resources: topics.map((resourceName) => ({ resourceType: ConfigResourceTypes.TOPIC, resourceName, configurationKeys: [...names] })),
    });
    return new Map(described.map((r) => [r.resourceName, new Map(r.configs.filter((c) => c.value !== null).map((c) => [c.name, c.value!]))]));
  }

  async offsets(topic: string): Promise<Awaited<ReturnType<Admin['offsets']>>> {
    const c = await this.offsetsConsumer();
    const { ListOffsetTimestamps } = await lib();
    const [low, high] = await Promise.all([
      c.listOffsets({ topics: [topic], timestamp: ListOffsetTimestamps.EARLIEST }),
      c.listOffsets({ topics: [topic], timestamp: ListOffsetTimestamps.LATEST }),
    ]);
    return (high.get(topic) ?? []).map((h, partition) => ({ partition, low: Number(low.get(topic)?.[partition] ?? 0n), high: Number(h) }));
  }

  async offsetsAt(topic: string, at: number): Promise<Array<{ partition: number; offset: number }>> {
    const c = await this.offsetsConsumer();
    const [found, ends] = await Promise.all([c.listOffsets({ topics: [topic], timestamp: BigInt(at) }), this.offsets(topic)]);
    // No record at or after `at`: the partition's end, as kafkajs answers.
    return ends.map(({ partition, high }) => {
      const o = found.get(topic)?.[partition];
      return { partition, offset: o === undefined || o < 0n ? high : Number(o) };
    });
  }

  async committedOffsets(groupId: string, topic: string): Promise<Array<{ partition: number; offset: number }>> {
    const ends = await this.offsets(topic);
    const groups = await this.a.listConsumerGroupOffsets({ groups: [{ groupId, topics: [{ name: topic, partitionIndexes: ends.map((e) => e.partition) }] }] });
    const partitions = groups[0]?.topics.find((t) => t.name === topic)?.partitions ?? [];
    const committed = new Map(partitions.map((p) => [p.partitionIndex, Number(p.committedOffset)]));
    return ends.map(({ partition }) => ({ partition, offset: committed.get(partition) ?? -1 }));
  }

  async groupMembers(groupId: string): Promise<number> {
    const groups = await this.a.describeGroups({ groups: [groupId] });
    return groups.get(groupId)?.members.size ?? 0;
  }

  deleteGroups(groupIds: readonly string[]): Promise<void> {
    return this.a.deleteGroups({ groups: [...groupIds] });
  }

  async cluster(): Promise<{ brokers: number; controller: number | null; clusterId: string }> {
    const m = await this.a.metadata({ topics: [], forceUpdate: true });
    return { brokers: m.brokers.size, controller: m.controllerId >= 0 ? m.controllerId : null, clusterId: m.id };
  }
}
