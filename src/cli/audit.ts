/** `quotaflow audit`: the breach records on quota.audit (src/audit) as a table, JSON or CSV. */
import { QuotaflowError } from '../errors.ts';
import { kafkaPort, requireTopics } from '../kafka/client.ts';
import { topicNames } from '../kafka/topics.ts';
import { foldBreaches, readBreachRecords, totals, type AuditRow } from '../audit/trail.ts';
import { EXIT } from './command.ts';
import { defineCommand } from './define.ts';
import { SHARED, kafkaBrokers, kafkaClient, shared, topicPrefix } from './settings.ts';
import { table } from './ui.ts';
import { humanDuration, parseTime } from './time.ts';

const CSV_COLUMNS: Array<keyof AuditRow> = [
  'tenant',
  'rule',
  'window',
  'limit',
  'firstCrossedAt',
  'liftedAt',
  'durationMs',
  'peakCount',
  'refused',
  'overshoot',
  'region',
  'counterKey',
];

function csvField(v: unknown): string {
  const s = v === null || v === undefined ? '' : typeof v === 'number' && v > 1e12 ? new Date(v).toISOString() : String(v);
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
    ...shared('brokers', 'topic-prefix', 'kafka-client'),
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
    if (!['table', 'json', 'csv'].includes(format))
      throw new QuotaflowError('USAGE', `--format ${JSON.stringify(format)} is not table, json or csv`, { hint: 'e.g. --format csv' });
    const now = Date.now();
    const since = values.since === undefined ? -Infinity : parseTime(values.since, '--since', now);
    const until = values.until === undefined ? Infinity : parseTime(values.until, '--until', now);
    const brokers = kafkaBrokers(values, io.env);
    const topic = topicNames(topicPrefix(values, io.env)).audit;
    const client = kafkaClient(values, io.env);
    await requireTopics(brokers, [topic], client);
    const kafka = kafkaPort({ brokers, clientId: 'quotaflow-audit', client, minLogLevel: 'error' });

    const { records, invalid } = await readBreachRecords(kafka, topic);
    const tenant = values.tenant;
    const rows = foldBreaches(records).filter(
      (r) =>
        (tenant === undefined || r.tenant === tenant || r.tenant.slice(r.tenant.indexOf('=') + 1) === tenant) &&
        (values.rule === undefined || r.rule === values.rule) &&
        r.firstCrossedAt >= since &&
        r.firstCrossedAt < until,
    );
    const sum = totals(rows);
    if (invalid) io.err(`skipped ${invalid} record(s) on the audit topic that are not breach records`);

    if (format === 'json') io.out(JSON.stringify({ breaches: rows, totals: sum }, null, 2));
    else if (format === 'csv') io.out(toCsv(rows));
    else if (rows.length === 0) io.out('no breaches match');
    else {
      const fmtTime = (t: number) =>
        new Date(t)
          .toISOString()
          .replace('T', ' ')
          .replace(/\.\d+Z$/, 'Z');
      io.out(
        table(
          ['tenant', 'rule', 'window', 'limit', 'first crossed', 'lasted', 'peak', 'refused', 'overshoot'],
          [
            ...rows.map((r) => [
              r.tenant,
              r.rule,
              r.window,
              r.limit,
              fmtTime(r.firstCrossedAt),
              r.durationMs === null ? 'open' : humanDuration(r.durationMs),
              r.peakCount,
              r.refused,
              r.overshoot,
            ]),
            [`${sum.tenants} tenant(s)`, '', '', '', `${sum.breaches} breach(es)`, `${sum.open} open`, '', sum.refused, sum.overshoot],
          ],
          ['left', 'left', 'left', 'right', 'left', 'right', 'right', 'right', 'right'],
        ),
      );
    }
    return EXIT.OK;
  },
});
