/**
 * Runtime overrides, followed from the compacted quota.overrides topic (written by
 * `quotaflow limits set|rm`). Every aggregator and gateway reads the whole topic from the start, so
 * each one knows every override; a null value (tombstone) removes one.
 */
import { EventEmitter } from 'node:events';
import { compileOverride, type CompiledOverride, type OverrideLookup } from '../policy/index.ts';
import { OverrideSchema, type Override } from '../events/index.ts';
import { follow, readToEnd, type Follower } from '../kafka/follow.ts';
import { READER_LABELS } from '../kafka/topics.ts';
import type { KafkaPort } from '../kafka/port.ts';
import type { Logger } from '../log.ts';

/** An override record's value, or undefined when it is not a valid override. */
function parseOverride(value: Buffer): Override | undefined {
  try {
    const parsed = OverrideSchema.safeParse(JSON.parse(value.toString()));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Every override on the compacted topic now (tombstones applied), by scope key. */
export async function readOverrides(kafka: KafkaPort, topic: string): Promise<Map<string, Override>> {
  const out = new Map<string, Override>();
  await readToEnd(
    kafka,
    topic,
    ({ key, value }) => {
      const scopeKey = key?.toString();
      if (!scopeKey) return;
      if (value === null || value.length === 0) out.delete(scopeKey);
      else {
        const o = parseOverride(value);
        if (o) out.set(scopeKey, o); // not an override: the feeds log these
      }
    },
    { label: READER_LABELS.overridesOnce },
  );
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

/** What an OverrideFeed emits, by name. */
export interface OverrideFeedEvents {
  /** The override of this scope key was set, changed or removed. */
  change: [scopeKey: string];
}

export class OverrideFeed extends EventEmitter<OverrideFeedEvents> implements OverrideLookup {
  private readonly overrides = new Map<string, CompiledOverride>();
  private follower: Follower | undefined;

  constructor(
    private readonly kafka: KafkaPort,
    private readonly topic: string,
    private readonly log: Logger,
  ) {
    super();
  }

  get(scopeKey: string): CompiledOverride | undefined {
    return this.overrides.get(scopeKey);
  }

  /** Connects and starts following; resolves once reading runs. */
  async start(): Promise<void> {
    this.follower = await follow(
      this.kafka,
      this.topic,
      ({ key, value, offset }) => {
        const scopeKey = key?.toString();
        if (!scopeKey) return;
        if (value === null || value.length === 0) {
          if (this.overrides.delete(scopeKey)) this.emit('change', scopeKey);
          return;
        }
        const o = parseOverride(value);
        if (!o) {
          this.log.warn('ignoring an override record that is not a valid override', { key: scopeKey, offset });
          return;
        }
        this.overrides.set(scopeKey, toCompiled(o));
        this.log.info('override applied', { key: scopeKey, reason: o.reason });
        this.emit('change', scopeKey);
      },
      {
        label: READER_LABELS.overrides,
        onError: (error, restarting) => this.log.warn('the overrides feed failed; its reader restarts', { error, restarting }),
      },
    );
  }

  async stop(): Promise<void> {
    await this.follower?.stop();
  }
}
