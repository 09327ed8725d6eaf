/**
 * RedisStore: the durable copy of the aggregator's counters. A batch is written with one
 * applyUsage script per tenant, all in one pipeline, so a batch costs one round trip; each
 * tenant's write is fenced by Kafka offsets (see lua/applyUsage-n.lua), which is what makes a
 * redelivered batch, a crash before the offset commit, or a zombie aggregator harmless.
 *
 * Against a Redis Cluster the commands are split into one pipeline per node, sent at once: still
 * one round trip of latency. A tenant's keys share one slot, so a tenant's write never splits.
 *
 * When a call fails, some tenants of the batch may have been written and others not: reload the
 * tenants and redo from their fences (a retry of the same writes is also safe: each answers
 * `applied`, `already-applied` or `conflict`).
 */
import type { ChainableCommander, Cluster } from 'ioredis';
import { logger } from '../log.ts';
import { whenReady, type RedisClient } from './client.ts';
import { noReply, toStoreError, unreachable } from './errors.ts';
import { bucketField, isMetaField, parseBucketField, type BucketCount } from './fields.ts';
import { counterOfTenant, type StoreKeys } from './keys.ts';
import { applyUsageResult, commandName, registerScripts } from './scripts.ts';
import { hashSlot } from './slot.ts';
import type { CounterWrite, LoadedCounter, LoadedTenant, LoadRequest, RoundTripHook, TenantApplyResult, TenantWrite, UsageStore } from './types.ts';

export interface RedisStoreOptions {
  /**
   * Longest a call may take, waiting for a connection included, before it fails with
   * SERVICE_UNREACHABLE (no connection) or TIMEOUT (connected, no reply). Default 5000 ms.
   */
  timeoutMs?: number;
  /** Called after each successful round trip: its duration in ms and the number of Redis commands. */
  onRoundTrip?: RoundTripHook;
}

/** One Redis command of a round trip; `slotKey` is any of its keys (they share a slot). */
interface Op {
  readonly slotKey: string;
  send(pipeline: ChainableCommander): void;
}

type Pipeline = ChainableCommander & Record<string, (...args: (string | number)[]) => unknown>;

const log = logger('store');

export class RedisStore implements UsageStore {
  readonly #client: RedisClient;
  readonly #keys: StoreKeys;
  readonly #timeoutMs: number;
  readonly #onRoundTrip: RoundTripHook | undefined;
  readonly #applyUsage = commandName('applyUsage');

  constructor(client: RedisClient, keys: StoreKeys, options: RedisStoreOptions = {}) {
    this.#client = client;
    this.#keys = keys;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#onRoundTrip = options.onRoundTrip;
    registerScripts(client);
  }

  /** Closes the connection this store was opened with (see openUsageStore). */
  async close(): Promise<void> {
    await this.#client.quit().then(
      () => undefined,
      () => this.#client.disconnect(),
    );
  }

  /** The name applyUsage is registered under on the client (carries the package version). */
  get applyUsageCommand(): string {
    return this.#applyUsage;
  }

  /**
   * Writes each tenant's changes if its stored fence for `partition` is its `expectedFence`, in
   * one round trip; one result per write, in order. Throws QuotaflowError SERVICE_UNREACHABLE or
   * TIMEOUT (retriable) when Redis cannot be reached, RangeError on a malformed write.
   */
  async apply(partition: number, writes: readonly TenantWrite[]): Promise<TenantApplyResult[]> {
    assertOffset(partition, 'partition');
    const ops: Op[] = writes.map((w) => {
      const args = this.#encode(partition, w);
      const slotKey = args[1] as string;
      return { slotKey, send: (p) => void (p as Pipeline)[this.#applyUsage]!(...args) };
    });
    const replies = await this.#roundTrip('apply', `apply ${writes.length} tenant write(s)`, ops);
    return replies.map((reply, i) => applyUsageResult(writes[i]!.tenantKey, reply));
  }

  /**
   * Each tenant's stored fence for `partition` and its counters' buckets and meta, in one round
   * trip; results in the order asked.
   */
  async load(partition: number, tenants: readonly LoadRequest[]): Promise<LoadedTenant[]> {
    assertOffset(partition, 'partition');
    const ops: Op[] = [];
    for (const t of tenants) {
      const fence = this.#keys.fence(t.tenantKey);
      ops.push({ slotKey: fence, send: (p) => void p.hget(fence, String(partition)) });
      for (const counterKey of t.counterKeys) {
        assertCounterOfTenant(counterKey, t.tenantKey);
        const hash = this.#keys.counter(counterKey);
        ops.push({ slotKey: hash, send: (p) => void p.hgetall(hash) });
      }
    }
    const replies = await this.#roundTrip('load', `load ${tenants.length} tenant(s)`, ops);
    let at = 0;
    return tenants.map((t) => {
      const fence = parseFence(replies[at++], t.tenantKey);
      const counters = t.counterKeys.map((counterKey) => parseCounter(counterKey, replies[at++]));
      return { tenantKey: t.tenantKey, fence, counters };
    });
  }

  /** [numKeys, fence, ...counters, partition, expected, new, ttl, ...blocks]: see lua/applyUsage-n.lua. */
  #encode(partition: number, w: TenantWrite): (string | number)[] {
    const fence = this.#keys.fence(w.tenantKey);
    if (w.expectedFence !== null) assertOffset(w.expectedFence, 'expectedFence');
    assertOffset(w.newFence, 'newFence');
    if (!Number.isSafeInteger(w.ttlMs) || w.ttlMs <= 0) throw new RangeError(`ttlMs must be a positive whole number of ms, got ${w.ttlMs}`);
    const args: (string | number)[] = [w.counters.length + 1, fence];
    for (const c of w.counters) {
      assertCounterOfTenant(c.counterKey, w.tenantKey);
      args.push(this.#keys.counter(c.counterKey));
    }
    args.push(partition, w.expectedFence ?? -1, w.newFence, w.ttlMs);
    for (const c of w.counters) encodeCounter(args, c);
    return args;
  }

  async #roundTrip(kind: 'apply' | 'load', what: string, ops: readonly Op[]): Promise<unknown[]> {
    if (ops.length === 0) return [];
    const waitStarted = performance.now();
    await whenReady(this.#client, this.#timeoutMs, what);
    const started = performance.now();
    const groups = this.#group(ops);
    const sent = Promise.all(
      groups.map((indices) => {
        const pipeline = this.#client.pipeline();
        for (const i of indices) ops[i]!.send(pipeline);
        return pipeline.exec();
      }),
    );
    const results = await this.#withDeadline(sent, this.#timeoutMs - (started - waitStarted), what);
    const replies = new Array<unknown>(ops.length);
    for (let g = 0; g < groups.length; g++) {
      const indices = groups[g]!;
      const result = results[g];
      if (!result) throw unreachable(what, new Error('the pipeline was discarded'));
      for (let j = 0; j < indices.length; j++) {
        const [err, value] = result[j] ?? [new Error('missing reply'), undefined];
        if (err) throw toStoreError(err, what);
        replies[indices[j]!] = value;
      }
    }
    const ms = performance.now() - started;
    try {
      this.#onRoundTrip?.(ms, ops.length, kind);
    } catch (e) {
      log.warn('onRoundTrip hook threw', { error: e });
    }
    return replies;
  }

  /** Op indices per pipeline: one for a single Redis; one per group of nodes on a cluster. */
  #group(ops: readonly Op[]): number[][] {
    if (!(this.#client as Cluster).isCluster) return [ops.map((_, i) => i)];
    const slots = (this.#client as Cluster).slots;
    const byNodes = new Map<string, number[]>();
    ops.forEach((op, i) => {
      const slot = hashSlot(op.slotKey);
      const nodes = slots[slot]?.join(';') ?? `slot ${slot}`;
      let group = byNodes.get(nodes);
      if (!group) byNodes.set(nodes, (group = []));
      group.push(i);
    });
    return [...byNodes.values()];
  }

  #withDeadline<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          const late = new Error(`no reply within ${this.#timeoutMs} ms`);
          reject(this.#client.status === 'ready' ? noReply(what, late) : unreachable(what, late));
        },
        Math.max(1, ms),
      );
    });
    return Promise.race([work.catch((e: unknown) => Promise.reject(toStoreError(e, what))), deadline]).finally(() => clearTimeout(timer));
  }
}

function assertOffset(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${what} must be a whole number >= 0, got ${value}`);
}

function assertCounterOfTenant(counterKey: string, tenantKey: string): void {
  // Keys of another tenant would live in another slot: Redis Cluster refuses such a script.
  if (!counterOfTenant(counterKey, tenantKey)) {
    throw new RangeError(`counter ${JSON.stringify(counterKey.slice(0, 200))} does not belong to tenant ${JSON.stringify(tenantKey.slice(0, 200))}`);
  }
}

function assertInt(value: number, what: string, min = Number.MIN_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(value) || value < min) throw new RangeError(`${what} must be a whole number >= ${min}, got ${value}`);
}

/** One counter block: nIncr nMeta nPrune pruneAbove, then the pairs. */
function encodeCounter(args: (string | number)[], c: CounterWrite): void {
  const metaNames = c.meta ? Object.keys(c.meta) : [];
  const keepFrom = c.prune?.keepFrom ?? [];
  args.push(c.increments.length, metaNames.length, keepFrom.length, c.prune?.whenMoreThan ?? 0);
  for (const inc of c.increments) {
    assertInt(inc.bucketMs, 'bucketMs', 1);
    assertInt(inc.bucketIndex, 'bucketIndex');
    assertInt(inc.delta, 'delta');
    args.push(bucketField(inc.bucketMs, inc.bucketIndex), inc.delta);
  }
  for (const name of metaNames) {
    if (!isMetaField(name)) throw new RangeError(`meta field names start with "_": ${JSON.stringify(name)} (counter ${c.counterKey})`);
    const value = c.meta![name];
    if (typeof value !== 'string') throw new RangeError(`meta field ${name} must be a string ('' deletes it)`);
    args.push(name, value);
  }
  if (c.prune) {
    assertInt(c.prune.whenMoreThan, 'prune.whenMoreThan', 0);
    for (const k of keepFrom) {
      assertInt(k.bucketMs, 'prune bucketMs', 1);
      assertInt(k.bucketIndex, 'prune bucketIndex');
      args.push(k.bucketMs, k.bucketIndex);
    }
  }
}

function parseFence(reply: unknown, tenantKey: string): number | null {
  if (reply === null || reply === undefined) return null;
  const fence = Number(reply);
  if (typeof reply !== 'string' || !Number.isSafeInteger(fence) || fence < 0) {
    throw new Error(`the stored fence of ${tenantKey} is not an offset: ${JSON.stringify(reply)}`);
  }
  return fence;
}

function parseCounter(counterKey: string, reply: unknown): LoadedCounter {
  const buckets: BucketCount[] = [];
  const meta: Record<string, string> = {};
  for (const [field, value] of Object.entries((reply ?? {}) as Record<string, string>)) {
    const bucket = parseBucketField(field);
    if (bucket) buckets.push({ bucketMs: bucket.bucketMs, bucketIndex: bucket.bucketIndex, count: Number(value) });
    else if (isMetaField(field)) meta[field] = value;
    // Anything else was written by a newer version under the same prefix: not ours to read.
  }
  return { counterKey, buckets, meta };
}
