/**
 * Window durations as policy files write them: `500ms`, `90s`, `1m`, `1h`, `1d`.
 * One integer and one unit, nothing else: `1.5h` or `1h30m` are refused (write `90m`), so every
 * duration is an exact integer number of milliseconds and prints back the same way.
 */
import { QuotaflowError } from '../errors.ts';

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
type Unit = keyof typeof UNIT_MS;

/** Largest unit first, so `formatDuration` picks the shortest exact spelling. */
const UNITS_DESC: readonly Unit[] = ['d', 'h', 'm', 's', 'ms'];

const DURATION = /^(\d+)(ms|s|m|h|d)$/;

/** `'90s'` → 90000. Throws CONFIG_INVALID for zero, negatives, fractions, missing or unknown units. */
export function parseDuration(text: string): number {
  const trimmed = typeof text === 'string' ? text.trim() : '';
  const match = DURATION.exec(trimmed);
  if (!match) {
    throw new QuotaflowError('CONFIG_INVALID', `invalid duration ${JSON.stringify(text)}`, {
      hint: 'write a positive whole number and a unit: 500ms, 90s, 1m, 1h, 1d (use 90m rather than 1.5h)',
      details: { duration: text },
    });
  }
  const amount = Number(match[1]);
  const ms = amount * UNIT_MS[match[2] as Unit];
  if (amount === 0) {
    throw new QuotaflowError('CONFIG_INVALID', `duration ${JSON.stringify(text)} is zero`, {
      hint: 'a window must be at least 1ms long',
      details: { duration: text },
    });
  }
  if (!Number.isSafeInteger(ms)) {
    throw new QuotaflowError('CONFIG_INVALID', `duration ${JSON.stringify(text)} is too large`, {
      hint: 'keep durations under about 285,000 years',
      details: { duration: text },
    });
  }
  return ms;
}

/** 86400000 → `'1d'`, 90000 → `'90s'`, 1500 → `'1500ms'`: the largest unit that divides exactly. */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) {
    throw new QuotaflowError('CONFIG_INVALID', `cannot format duration ${String(ms)}: not a whole, non-negative number of ms`, {
      details: { ms },
    });
  }
  if (ms === 0) return '0ms';
  for (const unit of UNITS_DESC) {
    if (ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`;
  }
  return `${ms}ms`; // unreachable: 1ms divides everything
}
