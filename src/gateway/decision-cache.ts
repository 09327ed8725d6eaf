/**
 * The gateway's copy of the live blocks, folded from the compacted quota.decisions topic. Pure: the
 * feed (decision-feed.ts) applies records in topic order; `check()` reads it on every request.
 *
 * A block is live while `now < until`: it expires locally at `until` even when no unblock arrives
 * (a lost unblock never locks a key out), and an unblock removes it early. Expired blocks are
 * dropped lazily on read and by `sweep`, so memory follows the live blocks.
 */
import type { Decision } from '../events/index.ts';

export interface CachedBlock {
  readonly counterKey: string;
  readonly rule: string;
  readonly window: string;
  readonly windowMs: number;
  readonly limit: number;
  readonly observed: number;
  readonly until: number;
  readonly decidedAt: number;
}

/** A live near snapshot and what this gateway has spent of its share since receiving it. */
export interface NearShare {
  readonly counterKey: string;
  readonly windowMs: number;
  readonly limit: number;
  readonly observed: number;
  readonly gateways: number;
  readonly until: number;
  readonly decidedAt: number;
  /** This gateway's share of the room left. */
  readonly share: number;
  /** Admitted by this gateway since the snapshot arrived. */
  spent: number;
}

export class DecisionCache {
  private readonly blocks = new Map<string, CachedBlock>();
  private readonly nears = new Map<string, NearShare>();
  /** Records applied (blocks, unblocks and already-expired blocks). */
  applied = 0;

  /** Folds one decision in. Returns true when it changed what `get` answers. */
  apply(d: Decision, now: number): boolean {
    this.applied++;
    if (d.state === 'near') {
      if (d.until <= now) return this.nears.delete(d.counterKey);
      const gateways = Math.max(1, d.gateways ?? 1);
      this.nears.set(d.counterKey, {
        counterKey: d.counterKey, windowMs: d.windowMs, limit: d.limit, observed: d.observed, gateways, until: d.until,
        decidedAt: d.decidedAt, share: Math.max(0, Math.floor((d.limit - d.observed) / gateways)), spent: 0,
      });
      return true;
    }
    this.nears.delete(d.counterKey);
    if (d.state === 'unblock' || d.until <= now) return this.blocks.delete(d.counterKey);
    this.blocks.set(d.counterKey, {
      counterKey: d.counterKey, rule: d.rule, window: d.window, windowMs: d.windowMs, limit: d.limit,
      observed: d.observed, until: d.until, decidedAt: d.decidedAt,
    });
    return true;
  }

  /** The live block on a counter at `now`, if any. */
  get(counterKey: string, now: number): CachedBlock | undefined {
    const b = this.blocks.get(counterKey);
    if (b === undefined) return undefined;
    if (now < b.until) return b;
    this.blocks.delete(counterKey);
    return undefined;
  }

  /** The live near snapshot on a counter at `now`, if any (its `spent` is this gateway's to update). */
  near(counterKey: string, now: number): NearShare | undefined {
    const n = this.nears.get(counterKey);
    if (n === undefined) return undefined;
    if (now < n.until) return n;
    this.nears.delete(counterKey);
    return undefined;
  }

  /** Near snapshots held (some may have expired since the last sweep). */
  get nearCount(): number {
    return this.nears.size;
  }

  /** Drops every block and near snapshot that has expired by `now`; returns how many blocks. */
  sweep(now: number): number {
    for (const [key, n] of this.nears) if (n.until <= now) this.nears.delete(key);
    let dropped = 0;
    for (const [key, b] of this.blocks) {
      if (b.until <= now) {
        this.blocks.delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  /** Blocks held (some may have expired since the last sweep). */
  get size(): number {
    return this.blocks.size;
  }

  /** The live blocks at `now`, for status pages and tests. */
  live(now: number): CachedBlock[] {
    return [...this.blocks.values()].filter((b) => now < b.until);
  }
}
