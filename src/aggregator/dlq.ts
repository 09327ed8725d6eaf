/**
 * Dead-letter records for quota.usage.dlq (DESIGN §2): the original key and the original bytes,
 * untouched so the record can be re-produced to quota.usage once the cause is fixed, with headers
 * saying why and where it came from. Pure: the producer belongs to the aggregator.
 */
import type { OutgoingRecord, RecordHeaders } from '../kafka/port.ts';
import { clip, type DlqReason } from '../events/decode.ts';

export const DLQ_HEADER = {
  reason: 'quotaflow-dlq-reason',
  detail: 'quotaflow-dlq-detail',
  sourceTopic: 'quotaflow-source-topic',
  sourcePartition: 'quotaflow-source-partition',
  sourceOffset: 'quotaflow-source-offset',
  /** For one event of a usage batch record: its index in the batch's events (the DLQ record holds that event alone). */
  sourceBatchIndex: 'quotaflow-source-batch-index',
  /** The source record's timestamp, when it had one (the DLQ record's own timestamp is `at`). */
  sourceTimestamp: 'quotaflow-source-timestamp',
  /** When the record was dead-lettered, epoch ms. */
  at: 'quotaflow-dlq-at',
} as const;

/** Headers travel with every DLQ record and are read by people; a detail longer than this is cut. */
export const MAX_DLQ_DETAIL_CHARS = 1_000;

export interface DlqSource {
  topic: string;
  partition: number;
  /** Kafka offsets are int64: kept as text, so the header is exact whatever the offset. */
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  /** Epoch ms, as text. */
  timestamp?: string;
  /** The event's index in a batch record, as text, when `value` is one event of it. */
  batchIndex?: string;
}

/** The DLQ record of `source`, for `dlqTopic`. */
export function dlqMessage(dlqTopic: string, source: DlqSource, reason: DlqReason, detail: string, at: number): OutgoingRecord {
  const headers: RecordHeaders = {
    [DLQ_HEADER.reason]: reason,
    [DLQ_HEADER.detail]: clip(detail, MAX_DLQ_DETAIL_CHARS),
    [DLQ_HEADER.sourceTopic]: source.topic,
    [DLQ_HEADER.sourcePartition]: String(source.partition),
    [DLQ_HEADER.sourceOffset]: source.offset,
    [DLQ_HEADER.at]: String(at),
  };
  if (source.timestamp !== undefined) headers[DLQ_HEADER.sourceTimestamp] = source.timestamp;
  if (source.batchIndex !== undefined) headers[DLQ_HEADER.sourceBatchIndex] = source.batchIndex;
  return {
    topic: dlqTopic,
    key: source.key,
    value: source.value,
    headers,
    // Retention on the DLQ counts from when the record was dead-lettered, not from when the gateway
    // sent it: replaying an old backlog must not write records that expire at once.
    timestamp: at,
  };
}

export interface DlqHeaders {
  /** One of DLQ_REASONS when written by this version; a newer writer may add reasons (see isDlqReason). */
  reason: string;
  detail: string;
  sourceTopic: string;
  sourcePartition: number;
  sourceOffset: string;
  sourceTimestamp: string | undefined;
  /** Set when the record is one event of a usage batch record: its index in the batch. */
  sourceBatchIndex?: number;
  at: number;
}

type HeaderValue = string | Buffer | Array<string | Buffer> | undefined;

function text(value: HeaderValue): string | undefined {
  if (value === undefined) return undefined;
  const one = Array.isArray(value) ? value[0] : value;
  return one === undefined ? undefined : one.toString();
}

/**
 * The DLQ headers of a record (as a consumer sees them: Buffers), or undefined when the record does
 * not carry them all: it was not written by dlqMessage.
 */
export function readDlqHeaders(headers: Readonly<Record<string, HeaderValue>> | undefined): DlqHeaders | undefined {
  if (!headers) return undefined;
  const reason = text(headers[DLQ_HEADER.reason]);
  const detail = text(headers[DLQ_HEADER.detail]);
  const sourceTopic = text(headers[DLQ_HEADER.sourceTopic]);
  const partition = text(headers[DLQ_HEADER.sourcePartition]);
  const sourceOffset = text(headers[DLQ_HEADER.sourceOffset]);
  const at = text(headers[DLQ_HEADER.at]);
  const batchIndex = text(headers[DLQ_HEADER.sourceBatchIndex]);
  if (!reason || detail === undefined || !sourceTopic || partition === undefined || !sourceOffset || at === undefined) return undefined;
  const sourcePartition = Number(partition);
  const atMs = Number(at);
  if (!/^\d+$/.test(partition) || !/^-?\d+$/.test(sourceOffset) || !/^\d+$/.test(at)) return undefined;
  const out: DlqHeaders = {
    reason,
    detail,
    sourceTopic,
    sourcePartition,
    sourceOffset,
    sourceTimestamp: text(headers[DLQ_HEADER.sourceTimestamp]),
    at: atMs,
  };
  if (batchIndex !== undefined && /^\d+$/.test(batchIndex)) out.sourceBatchIndex = Number(batchIndex);
  return out;
}
