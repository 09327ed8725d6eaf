/**
 * What quotaflow asks of a Kafka client, in our own terms: the only Kafka types the rest of the code
 * sees. Each client library has one adapter behind this port (src/kafka/kafkajs/,
 * src/kafka/platformatic/), chosen by one setting (`--kafka-client`, QUOTAFLOW_KAFKA_CLIENT); nothing
 * outside an adapter imports a client library.
 *
 * Five capabilities, each what a part of quotaflow needs and no more:
 *  - a keyed batch producer (gateways' usage events; aggregators' decisions, breach records, DLQ);
 *  - a group consumer handing over per-partition batches with explicit commits and assignment
 *    callbacks (the aggregators: effectively-once depends on committing only after the fenced
 *    store write, and on knowing when a partition was taken away);
 *  - a reader of partitions from given offsets, without a group commit (replay's ranges, and the
 *    followers of compacted topics built on it in follow.ts);
 *  - an admin;
 *  - and the settings every client shares.
 */

/** The client libraries quotaflow can use. */
export const KAFKA_CLIENTS = ['kafkajs', 'platformatic'] as const;
export type KafkaClientName = (typeof KAFKA_CLIENTS)[number];

export interface KafkaSettings {
  brokers: string[];
  clientId: string;
  /** Default: kafkajs. */
  client?: KafkaClientName;
  /** Connection attempts and requests the client retries itself; defaults suit long-running services. */
  retry?: { retries: number; initialRetryMs?: number; maxRetryMs?: number };
  connectionTimeoutMs?: number;
  /** The client's own log lines below this level are dropped (default warn). */
  minLogLevel?: 'error' | 'warn' | 'info' | 'debug' | 'nothing';
}

export type RecordHeaders = Record<string, string | Buffer>;

export interface OutgoingRecord {
  topic: string;
  key: string | Buffer | null;
  /** null: a tombstone. */
  value: string | Buffer | null;
  headers?: RecordHeaders;
  /** The record's timestamp, epoch ms (default: when it is sent). */
  timestamp?: number;
  /** Sends to this partition, whatever the key (default: the key's partition, as below). */
  partition?: number;
}

export interface IncomingRecord {
  offset: number;
  key: Buffer | null;
  value: Buffer | null;
  /** The record's timestamp, epoch ms. */
  timestamp: number;
  headers: Record<string, Buffer | undefined>;
}

export interface ProducerOptions {
  /** Idempotent (the broker drops retried duplicates; one request in flight). Default true. */
  idempotent?: boolean;
  /** Retries of a failed send before it rejects (bounded, so a lost Kafka surfaces as an error). */
  retries?: number;
  initialRetryMs?: number;
  maxRetryMs?: number;
}

export interface Producer {
  connect(): Promise<void>;
  /**
   * Sends with acks=all; resolves when every record is acknowledged. Keyed records of one key keep
   * their order, and go to the partition Java's producer picks (murmur2 of the key's bytes, made
   * positive, modulo the partitions), whichever client sends them: a tenant's events land on one
   * partition from every gateway, in any language, so one aggregator owns the tenant.
   */
  send(records: readonly OutgoingRecord[], opts?: { compression?: 'gzip' | 'none' }): Promise<void>;
  disconnect(): Promise<void>;
}

/** One partition's records as fetched, in offset order, handed to a GroupConsumer's handler. */
export interface PartitionBatch {
  topic: string;
  partition: number;
  records: IncomingRecord[];
  /** The partition's end (the offset the next record will get) when the batch was fetched. */
  highWatermark: number;
  /** Tells the group this member is alive (call it during long work). */
  heartbeat(): Promise<void>;
  /** False once the consumer is stopping or the partition was taken away: stop working on it, commit nothing. */
  isActive(): boolean;
  /** Commits `nextOffset` (the offset after the last record handled) for this partition. */
  commit(nextOffset: number): Promise<void>;
}

export interface GroupConsumerOptions {
  groupId: string;
  sessionTimeoutMs?: number;
  heartbeatIntervalMs?: number;
  maxBytesPerPartition?: number;
}

export interface GroupRunOptions {
  topic: string;
  /** Where a partition starts when the group has no committed offset: its beginning (true) or end. */
  fromBeginning: boolean;
  /** Partitions handled at once; a partition's batches are always handled one after another. */
  partitionsConcurrently: number;
  /** A batch that throws is delivered again from the last commit (after a restart of the consumer). */
  onBatch(batch: PartitionBatch): Promise<void>;
  /** The partitions of `topic` this member owns after each rebalance. */
  onAssigned?(partitions: number[]): void;
  /** A failure the consumer recovers from itself (`restarting`) or one that stopped it for good. */
  onError?(error: unknown, restarting: boolean): void;
}

export interface GroupConsumer {
  /** Joins the group and starts handing over batches; resolves once running. */
  run(opts: GroupRunOptions): Promise<void>;
  /** Finishes the batch in flight, commits nothing more, leaves the group. */
  stop(): Promise<void>;
}

export interface ReadOptions {
  /** Names the reader where the client shows one (kafkajs: its throwaway group's prefix). */
  label?: string;
  maxBytesPerPartition?: number;
  /** A failure the reader recovers from itself (`restarting`) or one that stopped it. */
  onError?(error: unknown, restarting: boolean): void;
}

export interface PartitionReader {
  /** Resolves once reading has started (not when anything was read). */
  started: Promise<void>;
  /** Stops reading; resolves once no more batches will be handed over. */
  stop(): Promise<void>;
}

export interface PartitionOffsets {
  partition: number;
  /** The first offset still in the log. */
  low: number;
  /** The offset the next record will get. */
  high: number;
}

export interface TopicSpec {
  topic: string;
  partitions: number;
  /** -1: the broker's default. */
  replicationFactor: number;
  configs: Record<string, string>;
}

export interface TopicMetadata {
  topic: string;
  partitions: Array<{ partition: number; leader: number; replicas: number[] }>;
}

/** Answers about partitions come ordered by partition. */
export interface Admin {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  listTopics(): Promise<string[]>;
  /** Creates the topics, without waiting for their leaders (see ensureTopics). */
  createTopics(specs: readonly TopicSpec[]): Promise<void>;
  deleteTopics(topics: readonly string[]): Promise<void>;
  /** Partitions, leaders and replicas; a topic the broker does not know (yet) rejects. */
  topicMetadata(topics: readonly string[]): Promise<TopicMetadata[]>;
  /** Each named config of each topic as the broker reports it. */
  topicConfigs(topics: readonly string[], names: readonly string[]): Promise<Map<string, Map<string, string>>>;
  offsets(topic: string): Promise<PartitionOffsets[]>;
  /** Per partition, the first offset whose timestamp is at or after `at` (the end where there is none). */
  offsetsAt(topic: string, at: number): Promise<Array<{ partition: number; offset: number }>>;
  /** The offsets a group has committed on a topic (-1 where it has none). */
  committedOffsets(groupId: string, topic: string): Promise<Array<{ partition: number; offset: number }>>;
  /** How many members the group has now (0 when it is empty or unknown). */
  groupMembers(groupId: string): Promise<number>;
  /** Deletes empty consumer groups and their committed offsets. */
  deleteGroups(groupIds: readonly string[]): Promise<void>;
  cluster(): Promise<{ brokers: number; controller: number | null; clusterId: string }>;
}

/** A Kafka client behind the port: what every part of quotaflow is given instead of a library's client. */
export interface KafkaPort {
  readonly client: KafkaClientName;
  readonly brokers: readonly string[];
  producer(opts?: ProducerOptions): Producer;
  consumer(opts: GroupConsumerOptions): GroupConsumer;
  /**
   * Reads `topic` from the given offset of each partition named, handing over each partition's
   * records in offset order (one call at a time), until stopped. No offsets are committed.
   */
  read(
    topic: string,
    starts: ReadonlyMap<number, number>,
    onBatch: (partition: number, records: IncomingRecord[]) => Promise<void> | void,
    opts?: ReadOptions,
  ): PartitionReader;
  admin(): Admin;
}
