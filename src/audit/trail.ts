/**
 * The audit trail: breach records on quota.audit folded into one row per breach (an aggregator writes
 * a breach twice, when it opens with liftedAt null and when it is lifted; the later record wins),
 * and their totals. `quotaflow audit` prints them; `replay --dry-run` compares a what-if with them.
 */
import { BreachRecordSchema, type BreachRecord } from '../events/index.ts';
import { readToEnd } from '../kafka/follow.ts';
import { READER_LABELS } from '../kafka/topics.ts';
import type { KafkaPort } from '../kafka/port.ts';

export interface AuditRow {
  tenant: string;
  counterKey: string;
  rule: string;
  window: string;
  windowMs: number;
  limit: number;
  firstCrossedAt: number;
  liftedAt: number | null;
  durationMs: number | null;
  peakCount: number;
  refused: number;
  overshoot: number;
  region: string;
}

export interface AuditTotals {
  breaches: number;
  open: number;
  refused: number;
  overshoot: number;
  tenants: number;
}

/** Every breach record on the audit topic, and how many records there are not breach records. */
export async function readBreachRecords(kafka: KafkaPort, topic: string): Promise<{ records: BreachRecord[]; invalid: number }> {
  const records: BreachRecord[] = [];
  let invalid = 0;
  await readToEnd(
    kafka,
    topic,
    (m) => {
      try {
        const parsed = BreachRecordSchema.safeParse(JSON.parse(m.value?.toString() ?? ''));
        if (parsed.success) records.push(parsed.data);
        else invalid++;
      } catch {
        invalid++;
      }
    },
    { label: READER_LABELS.audit },
  );
  return { records, invalid };
}

/** Folds breach records (open, then lifted) into one row per breach. */
export function foldBreaches(records: Iterable<BreachRecord>): AuditRow[] {
  const rows = new Map<string, AuditRow>();
  for (const r of records) {
    const id = `${r.counterKey}\u0000${r.windowMs}\u0000${r.firstCrossedAt}`;
    const prev = rows.get(id);
    if (prev && prev.liftedAt !== null && r.liftedAt === null) continue; // a late copy of the opening record
    rows.set(id, {
      tenant: r.tenant,
      counterKey: r.counterKey,
      rule: r.rule,
      window: r.window,
      windowMs: r.windowMs,
      limit: r.limit,
      firstCrossedAt: r.firstCrossedAt,
      liftedAt: r.liftedAt,
      durationMs: r.liftedAt === null ? null : r.liftedAt - r.firstCrossedAt,
      peakCount: r.peakCount,
      refused: r.refused,
      overshoot: r.overshoot,
      region: r.region,
    });
  }
  return [...rows.values()].sort((a, b) => a.firstCrossedAt - b.firstCrossedAt || a.counterKey.localeCompare(b.counterKey));
}

export function totals(rows: readonly AuditRow[]): AuditTotals {
  return {
    breaches: rows.length,
    open: rows.filter((r) => r.liftedAt === null).length,
    refused: rows.reduce((n, r) => n + r.refused, 0),
    overshoot: rows.reduce((n, r) => n + r.overshoot, 0),
    tenants: new Set(rows.map((r) => r.tenant)).size,
  };
}
