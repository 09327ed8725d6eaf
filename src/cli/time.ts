/** Times and durations as people type and read them on the command line. */
import { QuotaflowError } from '../errors.ts';

/** 850ms, 12.3s, 4m 05s, 2h 03m. */
export function humanDuration(ms: number): string {
  if (ms < 1_000) return `${Math.max(0, Math.round(ms))}ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)}s`;
  const s = Math.round(ms / 1_000);
  if (s < 3_600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3_600)}h ${String(Math.floor((s % 3_600) / 60)).padStart(2, '0')}m`;
}

export function parseTime(text: string, flag: string, now: number): number {
  if (/^\d+$/.test(text)) return Number(text);
  const ago = /^(\d+)(s|m|h|d)$/.exec(text);
  if (ago) return now - Number(ago[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[ago[2] as 's' | 'm' | 'h' | 'd'];
  const t = Date.parse(text);
  if (!Number.isFinite(t))
    throw new QuotaflowError('USAGE', `${flag} ${JSON.stringify(text)} is not a time`, {
      hint: 'give an ISO time (2026-11-24T09:00:00Z), epoch ms, or an age like 30m or 2h',
    });
  return t;
}
