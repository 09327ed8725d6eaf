/**
 * Runtime overrides, followed from the compacted quota.overrides topic (written by
 * `quotaflow limits set|rm`). Every aggregator reads the whole topic from the start under a group of
 * its own, so each one knows every override; a null value (tombstone) removes one.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { Consumer, Kafka } from 'kafkajs';
import { compileOverride, type CompiledOverride, type OverrideLookup } from '../policy/index.ts';
import { OverrideSchema, type Override } from '../events/index.ts';
import { readToEnd } from '../kafka/read.ts';
import type { Logger } from '../log.ts';

/** Every override on the compacted topic now (tombstones applied), by scope key. */
export async function readOverrides(kafka: Kafka, topic: string): Promise<Map<string, Override>> {
  const out = new Map<string, Override>();
  await readToEnd(kafka, topic, (message) => {
    const key = message.key?.toString();
    if (!key) return;
    if (message.value === null || message.value.length === 0) out.delete(key);
    else {
      let parsed;
      try {
        parsed = OverrideSchema.safeParse(JSON.parse(message.value.toString()));
      } catch {
        return; // not JSON: not an override (the aggregators log these)
      }
      if (parsed.success) out.set(key, parsed.data);
    }
  }, { groupPrefix: 'quotaflow-overrides-read' });
  return out;
}

/** The overrides as the resolver takes them (what an OverrideFeed holds once it has read the topic). */
export function compileOverrides(overrides: ReadonlyMap<string, Override>): Map<string, CompiledOverride> {
  const out = new Map<string, CompiledOverride>();
  for (const [key, o] of overrides) out.set(key, toCompiled(o));
  return out;
}

function toCompiled(o: Override): CompiledOverride {
  return compileOverride({ limits: 'limits' in o ? o.limits : undefined, unlimited: 'unlimited' in o ? o.unlimited : undefined, reason: o.reason });
}

export class OverrideFeed extends EventEmitter implements OverrideLookup {
  private readonly overrides = new Map<string, CompiledOverride>();
  private readonly consumer: Consumer;
  private stopped = false;

  constructor(kafka: Kafka, private readonly topic: string, private readonly log: Logger) {
    super();
    // A disconnect while kafkajs is restarting a crashed consumer does not stop it (tulios/kafkajs#1639):
    // no restart once stopped, and a restart that got through is stopped again.
    this.consumer = kafka.consumer({ groupId: `quotaflow-overrides-${randomBytes(6).toString('hex')}`, retry: { retries: 5, restartOnFailure: async () => !this.stopped } });
    this.consumer.on(this.consumer.events.FETCH_START, () => {
      if (this.stopped) void this.consumer.disconnect().catch(() => {});
    });
  }

  get(scopeKey: string): CompiledOverride | undefined {
    return this.overrides.get(scopeKey);
  }

  async start(): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.topic, fromBeginning: true });
    await this.consumer.run({
      eachMessage: async ({ message }) => {
        const scopeKey = message.key?.toString();
        if (!scopeKey) return;
        if (message.value === null || message.value.length === 0) {
          if (this.overrides.delete(scopeKey)) this.emit('change', scopeKey);
          return;
        }
        let parsed;
        try {
          parsed = OverrideSchema.safeParse(JSON.parse(message.value.toString()));
        } catch {
          parsed = undefined;
        }
        if (!parsed?.success) {
          this.log.warn('ignoring an override record that is not a valid override', { key: scopeKey, offset: message.offset });
          return;
        }
        const o = parsed.data;
        this.overrides.set(scopeKey, toCompiled(o));
        this.log.info('override applied', { key: scopeKey, reason: o.reason });
        this.emit('change', scopeKey);
      },
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.consumer.disconnect();
  }
}
