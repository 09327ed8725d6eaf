/** The summary printed when the demo stops: what happened per key, as text or as data (`--json`), and what to try next. */
import { humanDuration } from '../time.ts';
import { count, table } from '../ui.ts';
import type { Stack } from '../../stack/index.ts';
import type { TopicNames } from '../../kafka/topics.ts';
import type { DemoOptions } from './options.ts';
import type { TenantPlan } from './plan.ts';
import type { TenantCounts } from './traffic.ts';
import type { Observer } from './observe.ts';
import { REASONS, tenantHeading } from './view.ts';

export interface DemoSummary {
  policy: string;
  product: string;
  trafficMs: number;
  stoppedBy: 'duration' | 'ctrl-c' | 'error';
  topics: TopicNames;
  group: string;
  keyPrefix: string;
  /** The status a refused request gets (429 in every seed policy). */
  refusalStatus: number;
  /** The subject tenants are keyed by: api_key for TalkPilot. */
  tenantSubject: string;
  tenants: Array<{
    key: string;
    tenant: string;
    role: string;
    limits: string;
    ratePerSec: number;
    overLimit: boolean;
    sent: number;
    admitted: number;
    refused: number;
    failed: number;
    limitsHit: string[];
    blocks: number;
  }>;
  requests: TenantCounts;
  events: {
    /**
     * Requests the usage events the sidecar sent to Kafka stand for (one per admitted or refused
     * request; identical requests travel as one event with a count).
     */
    produced: number;
    dropped: number;
    /** Requests the events the aggregator consumed and committed in this run stand for, including any left from before it. */
    consumed: number;
    /** Records in the usage topic the aggregator had not consumed when the run started. */
    fromBeforeRun: number;
    /** The consumer lag when the summary was made: 0 once the aggregator has caught up (null: unknown). */
    lagAtEnd: number | null;
  };
  blocks: { published: number; moved: number; unblocks: number; nearSnapshots: number };
  refusalsByRule: Record<string, Record<string, number>>;
  overshoot: number;
  breaches: number;
}

export function limitsHit(observer: Observer, tenantKey: string): { limitsHit: string[]; blocks: number } {
  const m = observer.hits.get(tenantKey) ?? new Map<string, number>();
  return { limitsHit: [...m.keys()], blocks: [...m.values()].reduce((a, b) => a + b, 0) };
}

/** The over-limit key's story in one sentence, with its own figures. */
function whatHappened(s: DemoSummary): string {
  const t = s.tenants.find((x) => x.overLimit);
  if (!t) return '';
  const others = s.tenants.filter((x) => !x.overLimit);
  const othersRefused = others.reduce((n, x) => n + x.refused, 0);
  const blocked = t.blocks
    ? `the aggregator saw it reach ${t.limitsHit.join(' and ')} and published a block to ${s.topics.decisions} with the time its window has room again (${t.blocks}×); the sidecar answered ${s.refusalStatus} with Retry-After until then, ${count(t.refused)} times`
    : 'it was not blocked during this run (too short for its window?)';
  return (
    `What happened: "${t.key}" sent ${count(t.sent)} requests at ${t.ratePerSec}/s against ${t.limits}: ${blocked}. ` +
    (othersRefused === 0
      ? `The ${others.length} other keys stayed under their limits and were never refused.`
      : `The other keys were refused ${count(othersRefused)} times.`)
  );
}

export function summaryText(s: DemoSummary, next: string): string {
  const rows = s.tenants.map((t) => [
    t.key,
    t.role,
    t.limits,
    t.sent,
    t.admitted,
    t.refused,
    t.limitsHit.length ? `${t.limitsHit.join(', ')} (blocked ${t.blocks}×)` : '—',
  ]);
  const r = s.requests;
  const e = s.events;
  // Records left from before the run hold an unknown number of requests: exact only without them.
  const exact = e.lagAtEnd === 0 && e.fromBeforeRun === 0 && e.consumed === r.admitted + r.refused;
  const refusedBy = Object.entries(s.refusalsByRule)
    .map(
      ([rule, m]) =>
        `${rule}: ${Object.entries(m)
          .map(([reason, n]) => `${count(n)} ${REASONS[reason] ?? reason}`)
          .join(', ')}`,
    )
    .join('; ');
  return [
    `Summary — ${humanDuration(s.trafficMs)} of traffic through the sidecar, ${s.product} policy (${s.policy}), stopped by ${s.stoppedBy}`,
    '',
    table([tenantHeading(s.tenantSubject), 'traffic', 'limits', 'sent', 'admitted', 'refused', 'limit hit'], rows),
    '',
    whatHappened(s),
    '',
    `Requests   ${count(r.sent)} sent: ${count(r.admitted)} admitted, ${count(r.refused)} refused with ${s.refusalStatus}${r.failed ? `, ${count(r.failed)} failed` : ''}.${refusedBy ? ` Refused by rule — ${refusedBy}.` : ''}`,
    `Events     the sidecar sent usage events for ${count(e.produced)} requests to ${s.topics.usage}${e.dropped ? ` (${count(e.dropped)} dropped)` : ''}; the aggregator consumed ${count(e.consumed)}` +
      `${e.fromBeforeRun ? ` (with ${count(e.fromBeforeRun)} record(s) left from before this run)` : ''}${exact ? ' — every request counted exactly once' : `, consumer lag at the end ${e.lagAtEnd ?? 'unknown'}`}.`,
    `Blocks     ${s.blocks.published} published to ${s.topics.decisions} (${s.blocks.moved} re-published with a later until), ${s.blocks.unblocks} lifted, ${s.blocks.nearSnapshots} near-limit snapshot(s).`,
    `Overshoot  ${count(s.overshoot)} request(s) admitted over a limit, from ${s.breaches} breach record(s) in ${s.topics.audit}.` +
      (s.overshoot === 0
        ? " One gateway sees all of a key's traffic here, so its own count stops the key at the limit; with many gateways near-limit shares keep overshoot small."
        : ''),
    '',
    next,
  ].join('\n');
}

export function nextSteps(stack: Stack, opts: DemoOptions, runaway: TenantPlan): string {
  const prefix = opts.topicPrefix ? ` --topic-prefix ${opts.topicPrefix}` : '';
  const audit = `\`quotaflow audit${prefix} --tenant ${runaway.tenantKey}\``;
  const room = Math.ceil((runaway.ratePerSec * 72) / 10) * 10; // its rate a minute, and a fifth more
  const limits = ` or, while a demo runs, lift the block live: \`quotaflow limits set${prefix} --key ${runaway.scopeKey} --limit ${room} --window 60s\``;
  return stack.kafka.source === 'external'
    ? `Next: with the same KAFKA_BROKERS, see the breaches with ${audit}${limits}.`
    : `Next: keep a stack up with \`quotaflow stack up\` (it prints KAFKA_BROKERS and REDIS_URL), run the demo against it, then try ${audit}${limits}.`;
}
