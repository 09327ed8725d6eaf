/**
 * The replay's fold on worker threads: partitions are independent (each tenant lives on one), so
 * each is folded whole by one worker while the main thread reads Kafka. The main thread hands a
 * partition's records over as they arrive, packed into one transferable buffer per batch; a worker
 * folds them with its own ReplayFold (the policy compiled again there, since compiled rules hold
 * functions) and, at the end, sends its summary back as plain data.
 *
 * Workers start loading while the caller plans its ranges; then partitions go to them by size
 * (largest first, to the least loaded), so a worker's share is known before reading starts. A worker
 * with too many bytes not yet folded makes the reader wait.
 */
import { Worker } from 'node:worker_threads';
import type { FoldRecord } from '../fold/fold.ts';
import type { CompiledOverride, Policy } from '../policy/index.ts';
import { emptyStats, type FoldStats, type FoldSummary } from './fold.ts';
import type { PartitionRange } from './read.ts';

/** What a worker needs to fold as the main thread would (see worker.ts). */
export interface WorkerInit {
  policy: Policy;
  overrides: ReadonlyMap<string, CompiledOverride> | undefined;
  region: string;
  nearRatio: number;
  collectBreaches: boolean;
  /** Put each counter's store write in the summary (a rebuild). */
  writes: boolean;
  now: number;
  futureSkewMs: number | undefined;
}

/** A batch of one partition's records: offsets, value lengths (-1: null) and the values end to end. */
export interface PackedRecords {
  type: 'records';
  partition: number;
  offsets: Float64Array<ArrayBuffer>;
  lengths: Int32Array<ArrayBuffer>;
  bytes: Uint8Array<ArrayBuffer>;
}
export type ToWorker = PackedRecords | { type: 'finish'; at: number };
export type FromWorker = { type: 'folded'; bytes: number } | { type: 'summary'; summary: FoldSummary };

export const MAX_WORKERS = 256;

/** Bytes handed to one worker and not yet folded before the reader waits for it (default). */
const MAX_PENDING_BYTES = 32 * 1024 * 1024;

interface Thread {
  worker: Worker;
  pending: number;
  /** Resolves the reader's wait once `pending` is under the bound again. */
  resume: (() => void) | null;
  summary: Promise<FoldSummary>;
  deliver: ((s: FoldSummary) => void) | null;
  delivered: boolean;
}

export class FoldThreads {
  private readonly threads: Thread[] = [];
  private readonly owner = new Map<number, Thread>();
  private readonly failure = new AbortController();
  private error: unknown = null;
  private closing = false;

  /** Aborted when a worker fails: the reader stops and `finish` throws its error. */
  readonly failed: AbortSignal = this.failure.signal;

  private readonly maxPending: number;

  constructor(count: number, init: WorkerInit, opts: { maxPendingBytes?: number } = {}) {
    if (!Number.isInteger(count) || count < 1 || count > MAX_WORKERS)
      throw new RangeError(`worker threads: a whole number from 1 to ${MAX_WORKERS}, not ${count}`);
    this.maxPending = opts.maxPendingBytes ?? MAX_PENDING_BYTES;
    for (let i = 0; i < count; i++) this.threads.push(this.spawn(init));
  }

  /** Workers started: they load while the caller plans its ranges. */
  get size(): number {
    return this.threads.length;
  }

  /**
   * Gives each partition to be read to a worker, largest first to the least loaded; workers beyond
   * the number of partitions are stopped.
   */
  async assign(ranges: readonly PartitionRange[]): Promise<void> {
    const spare = this.threads.splice(Math.max(1, Math.min(this.threads.length, ranges.length)));
    await Promise.all(spare.map((t) => t.worker.terminate()));
    const load = new Map<Thread, number>(this.threads.map((t) => [t, 0]));
    const bySize = [...ranges].sort((a, b) => b.end - b.start - (a.end - a.start) || a.partition - b.partition);
    for (const r of bySize) {
      let least = this.threads[0]!;
      for (const t of this.threads) if (load.get(t)! < load.get(least)!) least = t;
      this.owner.set(r.partition, least);
      load.set(least, load.get(least)! + (r.end - r.start));
    }
  }

  /** Hands a partition's records (in offset order) to its worker; resolves when the reader may go on. */
  add(partition: number, records: readonly FoldRecord[]): Promise<void> | undefined {
    if (this.error !== null) return undefined;
    const thread = this.owner.get(partition);
    if (!thread) throw new Error(`partition ${partition} was not in the replay's ranges`);
    const message = pack(partition, records);
    thread.pending += message.bytes.byteLength;
    thread.worker.postMessage(message satisfies ToWorker, [message.offsets.buffer, message.lengths.buffer, message.bytes.buffer]);
    if (thread.pending <= this.maxPending) return undefined;
    return new Promise<void>((resolve) => (thread.resume = resolve));
  }

  /** Lapses blocks up to `at` in every worker and merges their summaries (partitions in order). */
  async finish(at: number): Promise<FoldSummary> {
    for (const t of this.threads) t.worker.postMessage({ type: 'finish', at } satisfies ToWorker);
    const summaries = await Promise.race([Promise.all(this.threads.map((t) => t.summary)), this.failedPromise()]);
    return mergeSummaries(summaries);
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.threads.map((t) => t.worker.terminate()));
  }

  private failedPromise(): Promise<never> {
    return new Promise((_, reject) => {
      if (this.error !== null) reject(this.error);
      this.failed.addEventListener('abort', () => reject(this.error), { once: true });
    });
  }

  private fail(error: unknown): void {
    if (this.error !== null) return;
    this.error = error;
    for (const t of this.threads) t.resume?.();
    this.failure.abort(error);
  }

  private spawn(init: WorkerInit): Thread {
    const thread: Thread = { worker: startWorker(init), pending: 0, resume: null, summary: Promise.resolve(null as never), deliver: null, delivered: false };
    thread.summary = new Promise<FoldSummary>((resolve) => (thread.deliver = resolve));
    thread.worker.on('message', (m: FromWorker) => {
      if (m.type === 'folded') {
        thread.pending -= m.bytes;
        if (thread.resume && thread.pending <= this.maxPending / 2) {
          const resume = thread.resume;
          thread.resume = null;
          resume();
        }
      } else {
        thread.delivered = true;
        thread.deliver?.(m.summary);
      }
    });
    thread.worker.on('error', (error) => this.fail(error));
    thread.worker.on('exit', (code) => {
      // terminate() (a spare, or close) ends a thread on purpose: only a thread still in use that
      // ends before its summary counts, whatever its exit code (finish would wait for it forever).
      if (!thread.delivered && this.threads.includes(thread) && !this.closing)
        this.fail(new Error(`a replay worker thread ended (exit code ${code}) before its summary`));
    });
    return thread;
  }
}

/**
 * Starts worker.ts. From the TypeScript sources (through tsx) a worker thread does not inherit the
 * loader hooks the main thread registered, so it registers tsx's first.
 */
function startWorker(init: WorkerInit): Worker {
  const fromSources = import.meta.url.endsWith('.ts');
  const entry = new URL(fromSources ? './worker.ts' : './worker.js', import.meta.url);
  // A young generation larger than V8's default: the fold makes short-lived objects per event, and
  // fewer scavenges fold ~10% faster (measured on the replay corpus); 64 MB per thread.
  const options = { workerData: init, resourceLimits: { maxYoungGenerationSizeMb: 64 } };
  if (!fromSources) return new Worker(entry, options);
  const tsx = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(code, { ...options, eval: true });
}

export function pack(partition: number, records: readonly FoldRecord[]): PackedRecords {
  let total = 0;
  for (const r of records) total += r.value?.length ?? 0;
  const offsets = new Float64Array(records.length);
  const lengths = new Int32Array(records.length);
  const bytes = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    offsets[i] = r.offset;
    if (r.value === null) lengths[i] = -1;
    else {
      bytes.set(r.value, at);
      lengths[i] = r.value.length;
      at += r.value.length;
    }
  }
  return { type: 'records', partition, offsets, lengths, bytes };
}

/** The records of a packed batch, their values views into its buffer. */
export function unpack(m: PackedRecords): Array<{ offset: number; value: Buffer | null }> {
  const out = new Array<{ offset: number; value: Buffer | null }>(m.offsets.length);
  const whole = Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength);
  let at = 0;
  for (let i = 0; i < m.offsets.length; i++) {
    const length = m.lengths[i]!;
    if (length < 0) out[i] = { offset: m.offsets[i]!, value: null };
    else {
      out[i] = { offset: m.offsets[i]!, value: whole.subarray(at, at + length) };
      at += length;
    }
  }
  return out;
}

export function mergeSummaries(summaries: readonly FoldSummary[]): FoldSummary {
  const stats: FoldStats = emptyStats();
  const out: FoldSummary = { stats, counters: 0, breaches: [], partitions: [] };
  for (const s of summaries) {
    for (const k of Object.keys(stats) as Array<keyof FoldStats>) stats[k] += s.stats[k];
    out.counters += s.counters;
    for (const b of s.breaches) out.breaches.push(b);
    for (const p of s.partitions) out.partitions.push(p);
  }
  out.partitions.sort((a, b) => a.partition - b.partition);
  return out;
}
