/**
 * `quotaflow replay`: re-folds quota.usage from Kafka as the aggregators do (src/replay), then either
 * writes the result into an empty Redis (--rebuild, after a loss) or compares its blocks with the
 * ones decided (--dry-run, a what-if under another policy).
 */
import { QuotaflowError } from '../errors.ts';
import { kafkaPort, requireTopics } from '../kafka/client.ts';
import type { KafkaClientName, KafkaPort } from '../kafka/port.ts';
import { groupNames, topicNames, type TopicNames } from '../kafka/topics.ts';
import { compilePolicy, loadPolicyFile, type CompiledPolicy } from '../policy/index.ts';
import { compileOverrides, readOverrides } from '../overrides/feed.ts';
import { counterTtlMs, longestWindowMs } from '../fold/context.ts';
import { openUsageStore } from '../store/index.ts';
import {
  compareBlocks,
  replayUsage,
  summarize,
  writeFold,
  type BlockInterval,
  type ComparedBlock,
  type ReadProgress,
  type ReplayRun,
  type ReplayStart,
} from '../replay/index.ts';
import { MAX_WORKERS } from '../replay/threads.ts';
import { EXIT, type CommandIO } from './command.ts';
import { defineCommand, type Values } from './define.ts';
import { SHARED, kafkaBrokers, kafkaClient, keyPrefix, redisUrl, shared, topicPrefix } from './settings.ts';
import { foldBreaches, readBreachRecords, type AuditRow } from '../audit/trail.ts';
import { humanDuration, parseTime } from './time.ts';
import { progress, table } from './ui.ts';

interface Parsed {
  mode: 'rebuild' | 'dry-run';
  policyFile: string;
  from: ReplayStart;
  to: number | undefined;
  all: boolean;
  json: boolean;
  force: boolean;
  group: string;
  brokers: string[];
  client: KafkaClientName;
  redisUrl: string | undefined;
  topics: TopicNames;
  keyPrefix: string;
  region: string;
  /** Worker threads that fold (undefined: one per core, see defaultWorkers). */
  workers: number | undefined;
}

function parseFrom(text: string, now: number): ReplayStart {
  if (text === 'earliest') return { kind: 'earliest' };
  if (/^\d+:\d+(,\d+:\d+)*$/.test(text)) {
    const offsets = new Map<number, number>();
    for (const part of text.split(',')) {
      const [p, o] = part.split(':').map(Number) as [number, number];
      offsets.set(p, o);
    }
    return { kind: 'offsets', offsets };
  }
  return { kind: 'time', at: parseTime(text, '--from', now) };
}

const OPTIONS = {
  rebuild: { type: 'boolean', help: 'write the replay into an empty Redis (above)' },
  'dry-run': { type: 'boolean', help: "compare the replay's blocks with the ones decided (above)" },
  policy: { type: 'string', value: 'FILE', help: 'the policy to count under (the live one for --rebuild; any for --dry-run)' },
  from: {
    type: 'string',
    value: 'WHEN',
    help: 'an ISO time, epoch ms, an age (90m, 2h, 1d: that long ago), `earliest`, or offsets\nper partition, 0:1200,1:980 (partitions not named are not read)',
  },
  to: { type: 'string', value: 'WHEN', help: 'stop at this time (default: the end of quota.usage when the replay starts)' },
  all: { type: 'boolean', help: '(dry run) also list the blocks that are the same under both' },
  json: { ...SHARED.json, help: 'print the result as JSON instead of tables' },
  force: { type: 'boolean', help: '(rebuild) skip the check that no aggregator is running' },
  group: { type: 'string', value: 'ID', help: "the aggregators' consumer group (default: <topic prefix>quotaflow-aggregators)" },
  ...shared('brokers'),
  redis: { ...SHARED.redis, help: 'Redis to rebuild' },
  ...shared('topic-prefix', 'kafka-client'),
  ...shared('key-prefix'),
  region: { type: 'string', value: 'NAME', help: 'region the aggregators stamp on decisions (default: local)' },
  workers: {
    type: 'string',
    value: 'N',
    help: 'worker threads that fold partitions while the command reads Kafka, at most one per\npartition (default: one per core; 0 folds on the main thread)',
  },
} as const;

function workerCount(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) > MAX_WORKERS)
    throw new QuotaflowError('USAGE', `--workers takes a whole number from 0 to ${MAX_WORKERS}, not '${text}'`, {
      hint: 'e.g. --workers 4, or --workers 0 to fold on the main thread',
    });
  return Number(text);
}

function parse(values: Values<typeof OPTIONS>, env: NodeJS.ProcessEnv, now: number): Parsed {
  if (Boolean(values.rebuild) === Boolean(values['dry-run'])) {
    throw new QuotaflowError('USAGE', 'say what the replay is for: --rebuild or --dry-run (one of them)', { hint: '`quotaflow replay --help` explains both' });
  }
  if (!values.policy) throw new QuotaflowError('USAGE', '--policy FILE is required', { hint: 'e.g. --policy policies/talkpilot.yaml' });
  if (!values.from)
    throw new QuotaflowError('USAGE', '--from WHEN is required', {
      hint: 'e.g. --from 2h (two hours ago), --from 2026-11-24T08:00:00Z, --from earliest or --from 0:1200,1:980',
    });
  const mode = values.rebuild ? 'rebuild' : 'dry-run';
  const redis = mode === 'rebuild' ? redisUrl(values, env) : undefined;
  const from = parseFrom(values.from, now);
  const to = values.to === undefined ? undefined : parseTime(values.to, '--to', now);
  if (to !== undefined && from.kind === 'time' && to <= from.at)
    throw new QuotaflowError('USAGE', '--to is not after --from', { hint: 'give a --to later than --from, or leave it out to read to the end' });
  return {
    mode,
    policyFile: values.policy,
    from,
    to,
    all: values.all ?? false,
    json: values.json ?? false,
    force: values.force ?? false,
    group: values.group ?? groupNames(topicPrefix(values, env)).aggregators,
    brokers: kafkaBrokers(values, env),
    client: kafkaClient(values, env),
    redisUrl: redis,
    topics: topicNames(topicPrefix(values, env)),
    keyPrefix: keyPrefix(values, env),
    region: values.region ?? 'local',
    workers: workerCount(values.workers),
  };
}

const fmtTime = (t: number) =>
  new Date(t)
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
const int = (n: number) => Math.round(n).toLocaleString('en-US');

/** "replaying quota.usage  42%  1,234,567 of 2,900,000 records  310,000/s  about 5s left" */
function progressLine(what: string, p: ReadProgress): string {
  const perSec = p.elapsedMs > 0 ? (p.read * 1000) / p.elapsedMs : 0;
  const left = perSec > 0 ? ((p.total - p.read) / perSec) * 1000 : undefined;
  const pct = p.total ? Math.floor((100 * p.read) / p.total) : 100;
  return `${what}  ${String(pct).padStart(3)}%  ${int(p.read)} of ${int(p.total)} records  ${int(perSec)}/s${left === undefined ? '' : `  about ${humanDuration(left)} left`}`;
}

async function aggregatorsRunning(kafka: KafkaPort, group: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await admin.groupMembers(group);
  } finally {
    await admin.disconnect();
  }
}

async function replay(o: Parsed, policy: CompiledPolicy, kafka: KafkaPort, io: CommandIO, from: ReplayStart, collectBreaches: boolean): Promise<ReplayRun> {
  const overrides = await readOverrides(kafka, o.topics.overrides);
  if (overrides.size) io.err(`applying ${overrides.size} runtime override(s) from ${o.topics.overrides}`);
  const ui = progress();
  const run = await replayUsage({
    kafka,
    topics: o.topics,
    policy,
    from,
    to: o.to,
    overrides: compileOverrides(overrides),
    collectBreaches,
    writes: o.mode === 'rebuild',
    region: o.region,
    workers: o.workers,
    signal: io.signal,
    onProgress: (p) => ui.update(progressLine(`replaying ${o.topics.usage}`, p)),
  });
  ui.done();
  return run;
}

function rangeText(run: ReplayRun): string {
  const read = run.ranges.filter((r) => r.end > r.start);
  const parts = read.map((r) => `${r.partition}:${r.start}–${r.end - 1}`).join(', ');
  return (
    `${int(run.read)} record(s) from ${read.length} partition(s) (${parts || 'none'}) in ${humanDuration(run.elapsedMs)}` +
    (run.elapsedMs > 0 ? `, ${int((run.read * 1000) / run.elapsedMs)} records/s` : '') +
    (run.workers > 0 ? `, folded on ${run.workers} worker thread(s)` : '')
  );
}

async function rebuild(o: Parsed, io: CommandIO): Promise<number> {
  const policy = compilePolicy(await loadPolicyFile(o.policyFile));
  await requireTopics(o.brokers, [o.topics.usage, o.topics.overrides], o.client);
  const kafka = kafkaPort({ brokers: o.brokers, clientId: 'quotaflow-replay', client: o.client, minLogLevel: 'error' });
  if (!o.force) {
    const members = await aggregatorsRunning(kafka, o.group);
    if (members > 0) {
      throw new QuotaflowError(
        'PRECONDITION_FAILED',
        `${members} aggregator(s) of group ${o.group} are running: they would write over the rebuild while it runs`,
        {
          hint: 'stop them, run the rebuild, then start them again (they carry on from their committed offsets); --force skips this check',
        },
      );
    }
  }
  const longest = longestWindowMs(policy);
  if (o.from.kind === 'time' && o.from.at > Date.now() - longest) {
    io.err(`warning: --from is less than one longest window (${humanDuration(longest)}) ago: windows reaching back before it will count short`);
  }
  const store = await openUsageStore(o.redisUrl!, { keyPrefix: o.keyPrefix });
  try {
    const run = await replay(o, policy, kafka, io, o.from, false);
    if (run.aborted) {
      io.err(`stopped after ${int(run.read)} record(s); Redis was not touched`);
      return EXIT.INTERRUPTED;
    }
    const ui = progress();
    const written = await writeFold(run.fold.partitions, store, counterTtlMs(policy), {
      signal: io.signal,
      onProgress: (done, all) => ui.update(`writing to Redis  ${int(done)} of ${int(all)} tenants`),
    });
    ui.done();
    const s = run.fold.stats;
    if (o.json) {
      io.out(JSON.stringify({ mode: 'rebuild', ranges: run.ranges, elapsedMs: Math.round(run.elapsedMs), workers: run.workers, fold: s, written }, null, 2));
    } else {
      io.out(`Read ${rangeText(run)}.`);
      io.out(
        table(
          ['records', 'counted', 'refused', 'late', 'unlimited', 'invalid', 'tenants', 'counters', 'blocked now', 'tenants written', 'already there'],
          [
            [
              s.records,
              s.counted,
              s.refused,
              s.late,
              s.unlimited,
              s.invalid,
              written.tenants,
              written.counters,
              written.blocked,
              written.written,
              written.present.length,
            ],
          ],
        ),
      );
    }
    if (written.aborted) {
      io.err(
        `stopped part-way: ${written.written} of ${written.tenants} tenant(s) written; run the same command again to finish (written tenants are skipped)`,
      );
      return EXIT.INTERRUPTED;
    }
    if (written.present.length) {
      io.err(
        `${written.present.length} tenant(s) were already in Redis and were left alone: ${written.present.slice(0, 5).join(', ')}${written.present.length > 5 ? ', …' : ''}\n` +
          '  → an aggregator wrote them since the loss (or an earlier rebuild did): their counts are what that writer left. To rebuild them too, delete their keys and run the rebuild again',
      );
      return EXIT.FAILURE;
    }
    if (!o.json)
      io.out(`Redis rebuilt: ${written.written} tenant(s), ${written.counters} counter(s), ${written.blocked} of them blocked. Start the aggregators again.`);
    return EXIT.OK;
  } finally {
    await store.close();
  }
}

function intervals(rows: readonly AuditRow[], until?: (r: AuditRow) => number | undefined): BlockInterval[] {
  return rows.map((r) => ({
    counterKey: r.counterKey,
    tenant: r.tenant,
    rule: r.rule,
    window: r.window,
    windowMs: r.windowMs,
    limit: r.limit,
    from: r.firstCrossedAt,
    to: r.liftedAt,
    until: r.liftedAt === null ? until?.(r) : undefined,
    peakCount: r.peakCount,
  }));
}

function span(b: BlockInterval | null): string {
  if (!b) return '—';
  const end = b.to !== null ? fmtTime(b.to) : b.until !== undefined ? `open, room at ${fmtTime(b.until)}` : 'open';
  return `${fmtTime(b.from)} → ${end}`;
}

function signed(ms: number | null): string {
  if (ms === null) return '';
  return ms === 0 ? '0' : `${ms > 0 ? '+' : '−'}${humanDuration(Math.abs(ms))}`;
}

async function dryRun(o: Parsed, io: CommandIO): Promise<number> {
  const policy = compilePolicy(await loadPolicyFile(o.policyFile));
  await requireTopics(o.brokers, [o.topics.usage, o.topics.overrides, o.topics.audit], o.client);
  const kafka = kafkaPort({ brokers: o.brokers, clientId: 'quotaflow-replay', client: o.client, minLogLevel: 'error' });
  // Warm up: one longest window before --from, so the windows are whole when comparing starts.
  const reportFrom = o.from.kind === 'time' ? o.from.at : -Infinity;
  const readFrom: ReplayStart = o.from.kind === 'time' ? { kind: 'time', at: o.from.at - longestWindowMs(policy) } : o.from;
  const run = await replay(o, policy, kafka, io, readFrom, true);
  if (run.aborted) {
    io.err(`stopped after ${int(run.read)} record(s); nothing to compare`);
    return EXIT.INTERRUPTED;
  }
  const reportTo = o.to ?? Infinity;
  const inRange = (r: AuditRow) => r.firstCrossedAt >= reportFrom && r.firstCrossedAt < reportTo;

  const until = new Map<string, number | undefined>();
  const tenants = new Set<string>();
  for (const part of run.fold.partitions) {
    for (const t of part.tenants) {
      tenants.add(t.tenantKey);
      for (const c of t.counters) until.set(c.counterKey, c.blockedUntil ?? undefined);
    }
  }
  const whatIf = intervals(foldBreaches(run.fold.breaches).filter(inRange), (r) => until.get(r.counterKey));
  // Blocks decided for tenants with no event in the range could not show up in the what-if: left out.
  const decided = intervals(foldBreaches((await readBreachRecords(kafka, o.topics.audit)).records.filter((b) => tenants.has(b.tenant))).filter(inRange));

  const rows = compareBlocks(decided, whatIf);
  const summary = summarize(rows);
  if (o.json) {
    io.out(
      JSON.stringify(
        {
          mode: 'dry-run',
          policy: policy.version,
          ranges: run.ranges,
          elapsedMs: Math.round(run.elapsedMs),
          workers: run.workers,
          fold: run.fold.stats,
          summary,
          blocks: o.all ? rows : rows.filter((r) => r.change !== 'same'),
        },
        null,
        2,
      ),
    );
    return EXIT.OK;
  }
  io.out(`Read ${rangeText(run)}.`);
  const shown = o.all ? rows : rows.filter((r) => r.change !== 'same');
  if (shown.length) {
    io.out(
      table(
        ['change', 'key', 'window', 'limit', 'decided', `what-if (${policy.version})`, 'duration'],
        shown.map((r: ComparedBlock) => [
          r.change,
          r.counterKey,
          r.window,
          r.decided && r.whatIf && r.decided.limit !== r.whatIf.limit ? `${r.decided.limit} → ${r.whatIf.limit}` : String((r.whatIf ?? r.decided)!.limit),
          span(r.decided),
          span(r.whatIf),
          signed(r.durationChangeMs),
        ]),
        ['left', 'left', 'left', 'right', 'left', 'left', 'right'],
      ),
    );
  }
  io.out(
    `${summary.decided} block(s) decided, ${summary.whatIf} under ${policy.version}: ${summary.new} new, ${summary.lifted} lifted, ${summary.changed} changed, ${summary.same} the same` +
      (o.all || summary.same === 0 ? '' : ' (--all lists them)'),
  );
  return EXIT.OK;
}

export const replayCommand = defineCommand({
  name: 'replay',
  summary: 're-fold quota.usage from Kafka: --rebuild Redis after a loss, or --dry-run a what-if policy',
  usage: ['quotaflow replay --rebuild --policy FILE --from WHEN [options]', 'quotaflow replay --dry-run --policy FILE --from WHEN [--to WHEN] [options]'],
  description: `Re-folds usage history from Kafka: rebuilds Redis after a loss, or asks "what if".

Reads quota.usage from WHEN (offsets found by time) to the end it has when the replay starts (or to
--to), and folds every event exactly as the aggregators do: same rolling buckets, same fences, same
block and breach rules, runtime overrides from quota.overrides applied as they are now.

  --rebuild   writes what the aggregators had into Redis: every counter's buckets, its live block and
              open breaches, and each tenant's fence. For a Redis that lost its data (FLUSHALL, a new
              instance). Stop the aggregators first (the rebuild refuses while their consumer group
              has members), then start them again: they carry on from their committed offsets and
              the fences skip whatever the rebuild already counted. Nothing is published: gateways
              keep the blocks they hold from quota.decisions. A tenant already in Redis is left alone
              and reported (exit 1), so counts that survived are never added to twice; running the
              same rebuild again is harmless.
              WHEN must reach back one longest window of the policy (e.g. 2h for a 1h limit) or the
              windows start short.
  --dry-run   folds under --policy (say, a policy with new limits) in memory only and prints which
              keys would have been blocked, from when to when, next to the blocks that were decided
              (the breach records on quota.audit): new blocks, lifted blocks, changed durations.
              Reading starts one longest window before WHEN so the windows are whole at WHEN; blocks
              that begin from WHEN on are compared. Requests that gateways refused stay refused (they
              never counted). Touches nothing.`,
  options: OPTIONS,
  examples: [
    'quotaflow replay --rebuild --policy policies/talkpilot.yaml --from 2h   # Redis lost its data: stop the aggregators first',
    'quotaflow replay --dry-run --policy halved.yaml --from 1d                   # what if every limit were halved, over the last day?',
    "quotaflow replay --dry-run --policy halved.yaml --from 2026-11-24T08:00:00Z --to 2026-11-24T12:00:00Z --json | jq '.summary'",
  ],
  exitCodes: {
    0: 'done',
    1: 'the rebuild found tenants already in Redis (left alone, listed)',
    2: 'bad usage',
    3: 'Kafka or Redis unreachable',
    130: 'stopped by Ctrl-C (a rebuild stopped part-way can be run again)',
  },
  async run({ values, io }) {
    const o = parse(values, io.env, Date.now());
    return o.mode === 'rebuild' ? rebuild(o, io) : dryRun(o, io);
  },
});
