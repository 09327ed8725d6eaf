/**
 * The gateway's copy of the live blocks, folded from the compacted quota.decisions topic. Pure: the
 * feed (decision-feed.ts) applies records in topic order; `check()` reads it on every request.
 *
 * A block is live while `now < until`: it expires locally at `until` even when no unblock arrives
 * (a lost unblock never locks a key out), and an unblock removes it early. Expired blocks are
 * dropped lazily on read and by `sweep`, so memory follows the live blocks.
 *
 * Near a limit, the aggregators publish `near` snapshots: the count, and how many gateways (G) sent
 * events for the counter within the window. From receiving one until its `until`, this gateway may
 * admit only its share of the room left and refuses past it. The share is floor(room / G), plus one
 * with probability (room mod G) / G, so the G shares add up to the room left on average and a room
 * smaller than G is not stranded. Each new snapshot (the room left halved, or the last one expired)
 * re-splits; what this gateway admitted after the new snapshot's event time is not in its count yet,
 * so it is charged against the new share. Overshoot then comes only from requests admitted while the
 * first snapshot was on its way (and the block after the last).
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
  /** Admitted by this gateway against this snapshot (including admissions after its event time made under the previous one). */
  spent: number;
  /** This gateway's admissions under near snapshots of this counter: [time, cost], for the next re-split. */
  readonly log: Array<[number, number]>;
}

export class DecisionCache {
  constructor(private readonly random: () => number = Math.random) {}

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
      const room = Math.max(0, d.limit - d.observed);
      const share = Math.floor(room / gateways) + (this.random() * gateways < room % gateways ? 1 : 0);
      // Admissions made here after the snapshot's event time are not in its count: charge them to it.
      const log = (this.nears.get(d.counterKey)?.log ?? []).filter(([t]) => t > d.decidedAt);
      const spent = log.reduce((n, [, c]) => n + c, 0);
      this.nears.set(d.counterKey, {
        counterKey: d.counterKey,
        windowMs: d.windowMs,
        limit: d.limit,
        observed: d.observed,
        gateways,
        until: d.until,
        decidedAt: d.decidedAt,
        share,
        spent,
        log,
      });
      return true;
    }
    this.nears.delete(d.counterKey);
    if (d.state === 'unblock' || d.until <= now) return this.blocks.delete(d.counterKey);
    this.blocks.set(d.counterKey, {
      counterKey: d.counterKey,
      rule: d.rule,
      window: d.window,
      windowMs: d.windowMs,
      limit: d.limit,
      observed: d.observed,
      until: d.until,
      decidedAt: d.decidedAt,
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

  /** Records an admission of `cost` at `now` against a live snapshot. */
  spend(near: NearShare, now: number, cost: number): void {
    near.spent += cost;
    near.log.push([now, cost]);
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
