/** What the aggregator and the sidecar report: decisions, breach records and refusals folded for the view, and the consumer lag. */
import type { Admin } from '../../kafka/port.ts';
import type { CheckResult } from '../../gateway/gateway.ts';
import type { BreachRecord, Decision } from '../../events/index.ts';

const bump = <K>(m: Map<K, number>, k: K, by = 1) => m.set(k, (m.get(k) ?? 0) + by);

/** Folds the aggregator's decisions and breach records and the sidecar's refusals into what the view shows. */
export class Observer {
  /** Live blocks by counter and window, as the last decision left them. */
  private readonly blocks = new Map<string, Decision>();
  private readonly breaches = new Map<string, BreachRecord>();
  /** rule → refusal reason → requests. */
  readonly refusals = new Map<string, Map<string, number>>();
  /** tenant → "60/60s" → blocks published. */
  readonly hits = new Map<string, Map<string, number>>();
  readonly published = { blocks: 0, moved: 0, unblocks: 0, near: 0 };

  onDecision = (d: Decision): void => {
    const id = `${d.counterKey}|${d.windowMs}`;
    if (d.state === 'near') {
      this.published.near++;
    } else if (d.state === 'unblock') {
      this.published.unblocks++;
      this.blocks.delete(id);
    } else {
      const live = this.blocks.get(id);
      if (live && live.until > d.decidedAt) {
        this.published.moved++;
      } else {
        this.published.blocks++;
        const m = this.hits.get(d.tenant) ?? new Map<string, number>();
        this.hits.set(d.tenant, bump(m, `${d.limit}/${d.window}`));
      }
      this.blocks.set(id, d);
    }
  };

  /** A breach is recorded when first crossed and again when lifted: the latest record of each counts. */
  onBreach = (b: BreachRecord): void => {
    this.breaches.set(`${b.counterKey}|${b.windowMs}|${b.firstCrossedAt}`, b);
  };

  onResult = (r: CheckResult): void => {
    if (r.allowed) return;
    const m = this.refusals.get(r.rule ?? '(none)') ?? new Map<string, number>();
    this.refusals.set(r.rule ?? '(none)', bump(m, r.reason));
  };

  /** Blocks whose `until` is still ahead (gateways expire them on their own at `until`). */
  liveBlocks(now: number): Decision[] {
    return [...this.blocks.values()].filter((d) => d.until > now).sort((a, b) => a.until - b.until);
  }

  get overshoot(): number {
    let sum = 0;
    for (const b of this.breaches.values()) sum += b.overshoot;
    return sum;
  }

  get breachCount(): number {
    return this.breaches.size;
  }
}

/** Messages in the usage topic not yet committed by the group: the aggregator's consumer lag. */
export async function consumerLag(admin: Admin, groupId: string, topic: string): Promise<number> {
  const [ends, offsets] = await Promise.all([admin.offsets(topic), admin.committedOffsets(groupId, topic)]);
  const committed = new Map(offsets.map((p) => [p.partition, p.offset]));
  return ends.reduce((lag, p) => {
    const at = committed.get(p.partition) ?? -1;
    return lag + Math.max(0, p.high - (at >= 0 ? at : p.low));
  }, 0);
}

/** Polls the lag in the background, one request pair at a time; `value` is the latest answer. */
export class LagGauge {
  value: number | undefined;
  private polling = false;
  constructor(
    private readonly admin: Admin,
    private readonly groupId: string,
    private readonly topic: string,
  ) {}
  poll(): void {
    if (this.polling) return;
    this.polling = true;
    consumerLag(this.admin, this.groupId, this.topic)
      .then(
        (lag) => (this.value = lag),
        () => (this.value = undefined),
      )
      .finally(() => (this.polling = false));
  }
}
