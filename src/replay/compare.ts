/**
 * A dry run's answer: blocks under the what-if policy next to the blocks that were decided, per
 * counter and window. A block here is a breach (from its first crossing to its lift); both sides are
 * breach rows (src/cli/audit.ts foldBreaches), the decided ones from quota.audit.
 *
 * Per counter key and window the two lists of intervals are matched in time order, each what-if
 * block with the first decided one it overlaps:
 *  - same:    matched, same start and end;
 *  - changed: matched, a different start or end (the duration change is shown when both ended);
 *  - new:     a what-if block that overlaps no decided block;
 *  - lifted:  a decided block that overlaps no what-if block.
 */
export interface BlockInterval {
  counterKey: string;
  tenant: string;
  rule: string;
  window: string;
  windowMs: number;
  limit: number;
  from: number;
  /** When it was lifted; null while open. */
  to: number | null;
  /** For an open what-if block: when its window has room again (the block's `until`). */
  until?: number;
  peakCount: number;
}

export type BlockChange = 'new' | 'lifted' | 'changed' | 'same';

export interface ComparedBlock {
  change: BlockChange;
  counterKey: string;
  tenant: string;
  rule: string;
  window: string;
  decided: BlockInterval | null;
  whatIf: BlockInterval | null;
  /** What-if duration minus decided duration (ms), when both have ended (or the what-if's `until` is known). */
  durationChangeMs: number | null;
}

const end = (b: BlockInterval) => b.to ?? b.until ?? Infinity;
const overlaps = (a: BlockInterval, b: BlockInterval) => a.from <= end(b) && b.from <= end(a);

export function compareBlocks(decided: readonly BlockInterval[], whatIf: readonly BlockInterval[]): ComparedBlock[] {
  const groups = new Map<string, { decided: BlockInterval[]; whatIf: BlockInterval[] }>();
  const group = (b: BlockInterval) => {
    const id = `${b.counterKey}\u0000${b.windowMs}`;
    let g = groups.get(id);
    if (!g) groups.set(id, (g = { decided: [], whatIf: [] }));
    return g;
  };
  for (const b of decided) group(b).decided.push(b);
  for (const b of whatIf) group(b).whatIf.push(b);

  const out: ComparedBlock[] = [];
  const row = (change: BlockChange, d: BlockInterval | null, w: BlockInterval | null): ComparedBlock => {
    const any = (w ?? d)!;
    const durationChangeMs = d && w && d.to !== null && (w.to ?? w.until) !== undefined ? (w.to ?? w.until)! - w.from - (d.to - d.from) : null;
    return { change, counterKey: any.counterKey, tenant: any.tenant, rule: any.rule, window: any.window, decided: d, whatIf: w, durationChangeMs };
  };
  for (const g of groups.values()) {
    g.decided.sort((a, b) => a.from - b.from);
    g.whatIf.sort((a, b) => a.from - b.from);
    const matched = new Set<BlockInterval>();
    for (const w of g.whatIf) {
      const d = g.decided.find((x) => !matched.has(x) && overlaps(x, w));
      if (!d) {
        out.push(row('new', null, w));
        continue;
      }
      matched.add(d);
      out.push(row(d.from === w.from && d.to === w.to ? 'same' : 'changed', d, w));
    }
    for (const d of g.decided) if (!matched.has(d)) out.push(row('lifted', d, null));
  }
  const at = (c: ComparedBlock) => (c.whatIf ?? c.decided)!.from;
  return out.sort((a, b) => at(a) - at(b) || a.counterKey.localeCompare(b.counterKey));
}

export function summarize(rows: readonly ComparedBlock[]): Record<BlockChange, number> & { decided: number; whatIf: number } {
  const s = { new: 0, lifted: 0, changed: 0, same: 0, decided: 0, whatIf: 0 };
  for (const r of rows) {
    s[r.change]++;
    if (r.decided) s.decided++;
    if (r.whatIf) s.whatIf++;
  }
  return s;
}
