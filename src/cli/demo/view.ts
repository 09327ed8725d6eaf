/**
 * The live view: the frame redrawn each second on a terminal, the snapshot line printed elsewhere,
 * and the logs held back while the frame is on screen.
 */
import type { CommandIO } from '../command.ts';
import { count, table } from '../ui.ts';
import type { Decision } from '../../events/index.ts';
import { configureLogging } from '../../log.ts';
import { logLevel } from '../settings.ts';
import type { DemoOptions } from './options.ts';
import type { TenantPlan } from './plan.ts';
import type { TenantCounts } from './traffic.ts';

interface Sample {
  at: number;
  events: number;
  sent: number;
  admitted: number;
  refused: number;
}

export interface LiveState {
  /** The subject tenants are keyed by (api_key). */
  subject: string;
  elapsedMs: number;
  durationMs: number | undefined;
  perSec: Omit<Sample, 'at'>;
  totals: TenantCounts;
  events: number;
  lag: number | undefined;
  cachedBlocks: number;
  blocks: Decision[];
  refusals: Map<string, Map<string, number>>;
  overshoot: number;
  breaches: number;
  tenants: Array<TenantPlan & TenantCounts>;
  warnings: string[];
}

/** Rates over the last few seconds of samples (one a second), steadier than a single second's. */
export class Rates {
  private readonly samples: Sample[] = [];
  push(s: Sample): Omit<Sample, 'at'> {
    this.samples.push(s);
    if (this.samples.length > 4) this.samples.shift();
    const a = this.samples[0]!;
    const secs = (s.at - a.at) / 1_000;
    const per = (k: keyof Omit<Sample, 'at'>) => (secs > 0 ? (s[k] - a[k]) / secs : 0);
    return { events: per('events'), sent: per('sent'), admitted: per('admitted'), refused: per('refused') };
  }
}

export const REASONS: Record<string, string> = {
  blocked: 'on a block decision',
  'local-limit': "on the sidecar's own count",
  'near-share': 'share spent near the limit',
  'fallback-closed': 'cache not warm (closed)',
};

/** The tenant column's heading: "API key" for TalkPilot, else the subject's name. */
export const tenantHeading = (subject: string) => (subject === 'api_key' ? 'API key' : subject);
const clock = (ms: number) => `${Math.floor(ms / 60_000)}:${String(Math.floor((ms % 60_000) / 1_000)).padStart(2, '0')}`;
const timeOfDay = (ms: number) => new Date(ms).toTimeString().slice(0, 8);
export const perSecText = (r: number) => (r >= 1 || r === 0 ? `${r.toFixed(r < 10 ? 1 : 0)}/s` : `${(r * 60).toFixed(r * 60 < 10 ? 1 : 0)}/min`);

function refusalsText(refusals: LiveState['refusals']): string {
  if (refusals.size === 0) return 'none';
  return [...refusals]
    .map(([rule, byReason]) => {
      const total = [...byReason.values()].reduce((a, b) => a + b, 0);
      const parts = [...byReason].map(([reason, n]) => `${count(n)} ${REASONS[reason] ?? reason}`);
      return `${rule} ${count(total)} (${parts.join(', ')})`;
    })
    .join('; ');
}

function blockRows(blocks: Decision[], now: number): Array<Array<string | number>> {
  return blocks.map((d) => [d.tenant, d.rule, d.window, `${d.observed}/${d.limit}`, timeOfDay(d.until), `${Math.ceil((d.until - now) / 1_000)}s`]);
}

export function frame(s: LiveState, title: string): string[] {
  const now = Date.now();
  const lag = s.lag === undefined ? '?' : count(s.lag);
  const lines = [
    `${title} · ${clock(s.elapsedMs)}${s.durationMs ? ` of ${clock(s.durationMs)}` : ''} · Ctrl-C stops and prints the summary`,
    '',
    `requests   ${perSecText(s.perSec.sent)} sent · ${perSecText(s.perSec.admitted)} admitted · ${perSecText(s.perSec.refused)} refused   (so far ${count(s.totals.sent)} · ${count(s.totals.admitted)} · ${count(s.totals.refused)})`,
    `pipeline   ${perSecText(s.perSec.events)} usage events consumed · consumer lag ${lag} · ${count(s.events)} counted so far`,
    `blocks     ${s.blocks.length} live (${s.cachedBlocks} in the sidecar's cache)`,
    `overshoot  ${count(s.overshoot)} admitted over a limit (${s.breaches} breach record(s))`,
    `refusals   ${refusalsText(s.refusals)}`,
    '',
    table(
      [tenantHeading(s.subject), 'traffic', 'limits', 'rate', 'sent', 'admitted', 'refused'],
      s.tenants.map((t) => [t.key, t.role, t.limits, perSecText(t.ratePerSec), t.sent, t.admitted, t.refused]),
    ),
    '',
    s.blocks.length ? table(['live block', 'rule', 'window', 'count', 'until', 'left'], blockRows(s.blocks, now)) : 'no live block right now',
  ];
  if (s.warnings.length) lines.push('', `warnings (${s.warnings.length}, all printed to stderr at the end):`, ...s.warnings.slice(-2).map((w) => `  ${w}`));
  return lines.flatMap((l) => l.split('\n'));
}

/** One line for logs and CI: the same figures as the live view, every 5 s. */
export function snapshotLine(s: LiveState): string {
  const blocks =
    s.blocks.map((d) => `${d.tenant} ${d.window} until ${timeOfDay(d.until)} (${Math.ceil((d.until - Date.now()) / 1_000)}s)`).join(', ') || 'none';
  return (
    `[${clock(s.elapsedMs)}] requests ${perSecText(s.perSec.sent)} sent, ${perSecText(s.perSec.admitted)} admitted, ${perSecText(s.perSec.refused)} refused` +
    ` | events ${perSecText(s.perSec.events)} (${count(s.events)}), lag ${s.lag ?? '?'} | blocks: ${blocks}` +
    ` | refused by rule: ${[...s.refusals].map(([rule, m]) => `${rule} ${count([...m.values()].reduce((a, b) => a + b, 0))}`).join(', ') || 'none'}` +
    ` | overshoot ${s.overshoot}`
  );
}

export interface HeldLogs {
  /** Warnings and errors logged meanwhile, for the view and for stderr afterwards. */
  warnings: string[];
  /** Logs go to stderr again (still at warn), after the warnings held so far. */
  release(): void;
  /** The level the environment asked for, once the demo is done. */
  restore(): void;
}

/** While the live view is on a terminal, logs below warn are dropped and warnings are held, so they cannot garble it. */
export function holdLogs(io: CommandIO): HeldLogs {
  const warnings: string[] = [];
  const level = logLevel(io.env);
  const toStderr = (line: string) => process.stderr.write(line + '\n');
  configureLogging({ level: level === 'debug' || level === 'info' ? 'warn' : level, write: (line) => warnings.push(line) });
  return {
    warnings,
    release() {
      configureLogging({ write: toStderr });
      for (const w of warnings) toStderr(w);
    },
    restore: () => configureLogging({ level, write: toStderr }),
  };
}

/** Where the live view goes: stdout, unless stdout carries the JSON summary. */
export const viewStream = (opts: DemoOptions) => (opts.json ? process.stderr : process.stdout);
