/**
 * `quotaflow regions`: what this region's Kafka holds of the other regions' rollups (the topics
 * MirrorMaker 2 mirrors in, `<region>.quota.rollup`), and of its own: per region, the newest rollup
 * seen, how far behind now that is (the mirror lag, plus up to one publish interval), the records,
 * and the counters with a rollup in the last window asked for.
 */
import { decodeRollup } from '../events/rollup.ts';
import { kafkaPort } from '../kafka/client.ts';
import type { KafkaPort } from '../kafka/port.ts';
import { topicNames } from '../kafka/topics.ts';
import { planRanges, readRanges } from '../replay/read.ts';
import { regexLiteral } from '../stack/mirror-maker.ts';
import { EXIT } from './command.ts';
import { defineCommand } from './define.ts';
import { SHARED, kafkaBrokers, kafkaClient, shared, topicPrefix } from './settings.ts';
import { humanDuration } from './time.ts';
import { parseDuration } from '../windows/duration.ts';
import { QuotaflowError } from '../errors.ts';
import { table } from './ui.ts';

export interface RegionStatus {
  /** The region the rollups count (`(this region)` for the local topic). */
  region: string;
  topic: string;
  local: boolean;
  records: number;
  /** publishedAt of the newest rollup read (null: none in the window read). */
  lastPublishedAt: number | null;
  /** now − lastPublishedAt. */
  lagMs: number | null;
  /** Counters with a rollup published in the window. */
  counters: number;
  /** Records in the window that are not rollups. */
  invalid: number;
}

/** The rollup topics on this cluster: the region's own, then one per remote region (MirrorMaker 2's `<alias>.` prefix). */
export function rollupTopics(all: readonly string[], prefix: string): Array<{ region: string | null; topic: string }> {
  const own = topicNames(prefix).rollup;
  const remote = new RegExp(`^([a-z][a-z0-9-]{0,31})\\.${regexLiteral(own)}$`);
  const out: Array<{ region: string | null; topic: string }> = [];
  if (all.includes(own)) out.push({ region: null, topic: own });
  for (const t of [...all].sort()) {
    const m = remote.exec(t);
    if (m) out.push({ region: m[1]!, topic: t });
  }
  return out;
}

export async function regionStatus(kafka: KafkaPort, prefix: string, windowMs: number, now: number): Promise<RegionStatus[]> {
  const admin = kafka.admin();
  await admin.connect();
  let topics: Array<{ region: string | null; topic: string }>;
  try {
    topics = rollupTopics(await admin.listTopics(), prefix);
  } finally {
    await admin.disconnect();
  }
  const out: RegionStatus[] = [];
  for (const { region, topic } of topics) {
    const ranges = await planRanges(kafka, topic, { kind: 'time', at: now - windowMs });
    const s: RegionStatus = {
      region: region ?? '(this region)',
      topic,
      local: region === null,
      records: 0,
      lastPublishedAt: null,
      lagMs: null,
      counters: 0,
      invalid: 0,
    };
    const counters = new Set<string>();
    await readRanges(kafka, topic, ranges, (_p, records) => {
      for (const r of records) {
        s.records++;
        const d = decodeRollup(r.value);
        if (!d.ok) {
          s.invalid++;
          continue;
        }
        counters.add(d.rollup.counterKey);
        if (s.lastPublishedAt === null || d.rollup.publishedAt > s.lastPublishedAt) s.lastPublishedAt = d.rollup.publishedAt;
      }
      return undefined;
    });
    s.counters = counters.size;
    s.lagMs = s.lastPublishedAt === null ? null : Math.max(0, now - s.lastPublishedAt);
    out.push(s);
  }
  return out;
}

export const regionsCommand = defineCommand({
  name: 'regions',
  summary: "the other regions' rollups this region's Kafka holds: newest, lag, counters",
  usage: ['quotaflow regions [--window DURATION] [--brokers LIST] [--topic-prefix P] [--json]'],
  description: `Shows what MirrorMaker 2 has brought into this region: for each remote region's rollup
topic (<region>.quota.rollup) and for this region's own quota.rollup, the newest rollup published
within the window, how long ago that was (the mirror lag, plus up to one publish interval of the
aggregators' --rollup-every), the records and the counters with a rollup in the window.

A remote region whose lag keeps growing is cut off: MirrorMaker 2 is down, or that region's Kafka
or aggregators are. No remote region at all: MirrorMaker 2 has not mirrored anything into this
cluster yet (\`quotaflow stack up --regions east,west\` shows a working setup).`,
  options: {
    window: { type: 'string', value: 'DURATION', help: 'how far back to read, e.g. 5m or 1h (default 5m)' },
    json: { ...SHARED.json, help: 'print the figures as JSON' },
    ...shared('brokers', 'topic-prefix', 'kafka-client'),
  },
  examples: ['quotaflow regions', 'quotaflow regions --window 1h --json'],
  exitCodes: { 0: 'the status was read (whatever it says)', 2: 'bad usage', 3: 'Kafka unreachable' },
  async run({ values, io }) {
    const windowMs = windowOf(values.window);
    const prefix = topicPrefix(values, io.env);
    const kafka = kafkaPort({
      brokers: kafkaBrokers(values, io.env),
      clientId: 'quotaflow-regions',
      client: kafkaClient(values, io.env),
      minLogLevel: 'error',
    });
    const now = Date.now();
    const status = await regionStatus(kafka, prefix, windowMs, now);
    if (values.json) {
      io.out(JSON.stringify({ windowMs, at: now, regions: status }, null, 2));
      return EXIT.OK;
    }
    const remote = status.filter((s) => !s.local);
    io.out(
      table(
        ['region', 'topic', 'newest rollup', 'lag', 'records', 'counters'],
        status.map((s) => [
          s.region,
          s.topic,
          s.lastPublishedAt === null ? '—' : new Date(s.lastPublishedAt).toISOString(),
          s.lagMs === null ? `none in ${humanDuration(windowMs)}` : humanDuration(s.lagMs),
          s.records,
          s.counters,
        ]),
        ['left', 'left', 'left', 'right', 'right', 'right'],
      ),
    );
    if (remote.length === 0) {
      io.err(
        `no other region's rollups on this cluster (no <region>.${topicNames(prefix).rollup} topic)\n  → run MirrorMaker 2 between the regions (\`quotaflow stack up --regions east,west\` shows how) and the aggregators with --rollups`,
      );
    }
    const invalid = status.reduce((n, s) => n + s.invalid, 0);
    if (invalid) io.err(`${invalid} record(s) in the window were not rollups (left out)`);
    return EXIT.OK;
  },
});

function windowOf(text: string | undefined): number {
  if (text === undefined) return 5 * 60_000;
  try {
    return parseDuration(text);
  } catch {
    throw new QuotaflowError('USAGE', `--window ${JSON.stringify(text)} is not a duration`, { hint: 'e.g. --window 5m or --window 1h' });
  }
}
