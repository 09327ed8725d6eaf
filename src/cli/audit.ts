/**
 * `quotaflow audit`: the breach records on quota.audit as a table, JSON or CSV. An aggregator writes a
 * breach twice, when it opens (liftedAt null) and when it is lifted; the later record wins.
 */
import type { Kafka } from 'kafkajs';
import { QuotaflowError } from '../errors.ts';
import { createKafka, requireTopics } from '../kafka/client.ts';
import { topicNames } from '../kafka/topics.ts';
import { readToEnd } from '../kafka/read.ts';
import { BreachRecordSchema, type BreachRecord } from '../events/index.ts';
import { EXIT } from './command.ts';
import { defineCommand } from './define.ts';
import { SHARED, kafkaBrokers, shared, topicPrefix } from './settings.ts';
import { table } from './ui.ts';
import { humanDuration, parseTime } from './time.ts';

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
export async function readBreachRecords(kafka: Kafka, topic: string): Promise<{ records: BreachRecord[]; invalid: number }> {
  const records: BreachRecord[] = [];
  let invalid = 0;
  await readToEnd(kafka, topic, (m) => {
    try {
      const parsed = BreachRecordSchema.safeParse(JSON.parse(m.value?.toString() ?? ''));
      if (parsed.success) records.push(parsed.data);
      else invalid++;
    } catch {
      invalid++;
    }
  }, { groupPrefix: 'quotaflow-audit' });
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
      tenant: r.tenant, counterKey: r.counterKey, rule: r.rule, window: r.window, windowMs: r.windowMs, limit: r.limit, firstCrossedAt: r.firstCrossedAt,
      liftedAt: r.liftedAt, durationMs: r.liftedAt === null ? null : r.liftedAt - r.firstCrossedAt, peakCount: r.peakCount,
      refused: r.refused, overshoot: r.overshoot, region: r.region,
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

const CSV_COLUMNS: Array<keyof AuditRow> = ['tenant', 'rule', 'window', 'limit', 'firstCrossedAt', 'liftedAt', 'durationMs', 'peakCount', 'refused', 'overshoot', 'region', 'counterKey'];

function csvField(v: unknown): string {
  const s = v === null || v === undefined ? '' : typeof v === 'number' && (v > 1e12) ? new Date(v).toISOString() : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function toCsv(rows: readonly AuditRow[]): string {
  return [CSV_COLUMNS.join(','), ...rows.map((r) => CSV_COLUMNS.map((c) => csvField(r[c])).join(','))].join('\n');
}

export const auditCommand = defineCommand({
  name: 'audit',
  summary: 'breaches of limits from quota.audit: when, how long, refused and overshoot (table, JSON, CSV)',
  usage: ['quotaflow audit [--tenant T] [--rule R] [--since TIME] [--until TIME] [--format table|json|csv] [--json]'],
  description: `Who went over which limit, when, for how long, and by how much.

Reads every breach record from quota.audit (an aggregator writes one when a counter first reaches a
limit and again when the block lifts) and prints one line per breach: tenant, rule, window, limit,
first crossing, how long it lasted (or "open"), peak count, requests refused meanwhile and requests
admitted over the limit (overshoot), then the totals.`,
  options: {
    tenant: { type: 'string', value: 'T', help: 'only this tenant, as on the records: api_key=tp_live_42 (or just the value)' },
    rule: { type: 'string', value: 'R', help: 'only this rule id' },
    since: { type: 'string', value: 'TIME', help: 'breaches that first crossed at or after TIME (ISO time, epoch ms, or 1h/30m ago)' },
    until: { type: 'string', value: 'TIME', help: '... and before TIME' },
    format: { type: 'string', value: 'F', help: 'table (default), json (an array plus totals) or csv (a header line, one row per breach)' },
    json: { ...SHARED.json, help: 'the same as --format json' },
    ...shared('brokers', 'topic-prefix'),
  },
  examples: [
    'quotaflow audit',
    'quotaflow audit --tenant api_key=tp_live_42 --since 2026-11-24T00:00:00Z',
    'quotaflow audit --rule per-bot --since 1h --format csv > breaches.csv',
    "quotaflow audit --format json | jq '.totals'",
  ],
  exitCodes: { 0: 'done (also when nothing matched)', 2: 'bad usage', 3: 'Kafka unreachable' },
  async run({ values, io }) {
    if (values.json && values.format !== undefined && values.format !== 'json') {
      throw new QuotaflowError('USAGE', `--json and --format ${values.format} ask for two formats`, { hint: 'give one: --json is the same as --format json' });
    }
    const format = values.json ? 'json' : (values.format ?? 'table');
    if (!['table', 'json', 'csv'].includes(format)) throw new QuotaflowError('USAGE', `--format ${JSON.stringify(format)} is not table, json or csv`, { hint: 'e.g. --format csv' });
    const now = Date.now();
    const since = values.since === undefined ? -Infinity : parseTime(values.since, '--since', now);
    const until = values.until === undefined ? Infinity : parseTime(values.until, '--until', now);
    const brokers = kafkaBrokers(values, io.env);
    const topic = topicNames(topicPrefix(values, io.env)).audit;
    await requireTopics(brokers, [topic]);
    const kafka = createKafka({ brokers, clientId: 'quotaflow-audit', minLogLevel: 'error' });

    const { records, invalid } = await readBreachRecords(kafka, topic);
    const tenant = values.tenant;
    const rows = foldBreaches(records).filter((r) =>
      (tenant === undefined || r.tenant === tenant || r.tenant.slice(r.tenant.indexOf('=') + 1) === tenant)
      && (values.rule === undefined || r.rule === values.rule)
      && r.firstCrossedAt >= since && r.firstCrossedAt < until);
    const sum = totals(rows);
    if (invalid) io.err(`skipped ${invalid} record(s) on the audit topic that are not breach records`);

    if (format === 'json') io.out(JSON.stringify({ breaches: rows, totals: sum }, null, 2));
    else if (format === 'csv') io.out(toCsv(rows));
    else if (rows.length === 0) io.out('no breaches match');
    else {
      const fmtTime = (t: number) => new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
      io.out(table(
        ['tenant', 'rule', 'window', 'limit', 'first crossed', 'lasted', 'peak', 'refused', 'overshoot'],
        [
          ...rows.map((r) => [r.tenant, r.rule, r.window, r.limit, fmtTime(r.firstCrossedAt), r.durationMs === null ? 'open' : humanDuration(r.durationMs), r.peakCount, r.refused, r.overshoot]),
          [`${sum.tenants} tenant(s)`, '', '', '', `${sum.breaches} breach(es)`, `${sum.open} open`, '', sum.refused, sum.overshoot],
        ],
        ['left', 'left', 'left', 'right', 'left', 'right', 'right', 'right', 'right'],
      ));
    }
    return EXIT.OK;
  },
});
