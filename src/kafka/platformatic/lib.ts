/** The @platformatic/kafka library, loaded on first use, and the conversions between its types and the port's. */
import type { Consumer as LibConsumer, Message as LibMessage } from '@platformatic/kafka';
import type { IncomingRecord, KafkaSettings, OutgoingRecord } from '../port.ts';

export type Lib = typeof import('@platformatic/kafka');
let loading: Promise<Lib> | undefined;
/** The library, imported once on first use. */
export const lib = (): Promise<Lib> => (loading ??= import('@platformatic/kafka'));

/** The options every client of the library takes, from the port's settings. */
export function baseOptions(settings: KafkaSettings, clientId = settings.clientId) {
  const retry = settings.retry ?? { retries: 8, initialRetryMs: 200 };
  return {
    clientId,
    bootstrapBrokers: [...settings.brokers],
    connectTimeout: settings.connectionTimeoutMs ?? 3_000,
    retries: retry.retries,
    retryDelay: retry.initialRetryMs ?? 200,
  };
}

const buffer = (v: string | Buffer | null | undefined): Buffer | undefined =>
  v === null || v === undefined ? undefined : typeof v === 'string' ? Buffer.from(v) : v;

export function toMessage(r: OutgoingRecord) {
  const headers = r.headers === undefined ? undefined : new Map(Object.entries(r.headers).map(([k, v]) => [Buffer.from(k), buffer(v)!]));
  return {
    topic: r.topic,
    key: buffer(r.key),
    value: buffer(r.value),
    headers,
    timestamp: r.timestamp === undefined ? undefined : BigInt(r.timestamp),
    partition: r.partition,
  };
}

export function toIncoming(m: LibMessage<Buffer, Buffer, Buffer, Buffer>): IncomingRecord {
  const headers: Record<string, Buffer | undefined> = {};
  for (const [k, v] of m.headers) headers[k.toString()] = v;
  // A tombstone arrives as an empty value here; the port says null, as kafkajs does.
  return {
    offset: Number(m.offset),
    key: m.key ?? null,
    value: m.value === undefined || m.value === null ? null : m.value,
    timestamp: Number(m.timestamp),
    headers,
  };
}

/** Closes a consumer and its streams (leaving its group); never rejects. */
export function closeConsumer(consumer: LibConsumer<Buffer, Buffer, Buffer, Buffer> | undefined): Promise<void> {
  return new Promise((resolve) => (consumer ? consumer.close(true, () => resolve()) : resolve()));
}
