/**
 * Numbers and how they are shown: medians and percentiles, number formats, and a figure (its value
 * in every run, shown as median and min – max) as a markdown table or a console table.
 */
import { table } from '../../../src/cli/ui.ts';

export const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The p-th percentile (0..100) of ascending values, nearest rank. */
export const pct = (sorted: ArrayLike<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;

export const int = (n: number) => Math.round(n).toLocaleString('en-US');
export const perSec = (n: number) => `${int(n)}/s`;
export const bytes = (n: number) => `${int(n)} B`;
export const mib = (n: number) => (n < 10 * 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${int(n / 2 ** 20)} MiB`);
/** `a` as a multiple of `b`, with `digits` decimals below 10×. */
export const ratio = (a: number, b: number, digits = 1) => (b > 0 ? `${(a / b).toFixed(a / b >= 10 ? 0 : digits)}×` : '—');

/** One figure over the runs: its values (one per run, or per window), shown as median and min–max. */
export interface Figure {
  /** The report section it belongs to, where a benchmark has several. */
  section?: string;
  name: string;
  values: number[];
  fmt: (n: number) => string;
  /** Against the baseline, or a note, e.g. "5.7× the Envoy-style baseline". */
  vs?: string;
}

export const spread = (f: Figure) => (f.values.length > 1 ? `${f.fmt(Math.min(...f.values))} – ${f.fmt(Math.max(...f.values))}` : '—');

/** Figures as a markdown table: name, median, min – max, and the last column headed `vsHeader`. */
export function mdTable(figures: readonly Figure[], vsHeader = 'vs baseline / note'): string[] {
  return [
    `| figure | median | min – max | ${vsHeader} |`,
    '|---|---:|---:|---|',
    ...figures.map((f) => `| ${f.name} | ${f.fmt(median(f.values))} | ${spread(f)} | ${f.vs ?? ''} |`),
  ];
}

/** Figures as an aligned console table, with a section column when `withSection`. */
export function consoleTable(figures: readonly Figure[], headers: [string, string], withSection = false): string {
  const rows = figures.map((f) => [...(withSection ? [f.section ?? ''] : []), f.name, f.fmt(median(f.values)), spread(f), f.vs ?? '']);
  return table([...(withSection ? ['section'] : []), headers[0], 'median', 'min – max', headers[1]], rows);
}
