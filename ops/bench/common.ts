/**
 * What the benchmarks share: medians and percentiles, number formats, a figure's median and spread,
 * Ctrl-C handling, the Redis chores, and the lines every results file opens with (the exact command,
 * the machine, Node, Kafka and Redis), so each benchmark file holds only what it measures.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Stack } from '../../src/stack/index.ts';
import type { RedisClient } from '../../src/store/index.ts';

// ─── numbers ────────────────────────────────────────────────────────────────────────────────────

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The p-th percentile (0..100) of ascending values, nearest rank. */
export const pct = (sorted: ArrayLike<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;

// ─── formats ────────────────────────────────────────────────────────────────────────────────────

export const int = (n: number) => Math.round(n).toLocaleString('en-US');
export const perSec = (n: number) => `${int(n)}/s`;
export const bytes = (n: number) => `${int(n)} B`;
export const mib = (n: number) => (n < 10 * 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : `${int(n / 2 ** 20)} MiB`);
/** `a` as a multiple of `b`, with `digits` decimals below 10×. */
export const ratio = (a: number, b: number, digits = 1) => (b > 0 ? `${(a / b).toFixed(a / b >= 10 ? 0 : digits)}×` : '—');

// ─── figures ────────────────────────────────────────────────────────────────────────────────────

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

// ─── help ───────────────────────────────────────────────────────────────────────────────────────

/** Where a benchmark on services gets them, for its --help. */
export const SERVICES_HELP = `Kafka and Redis come from KAFKA_BROKERS / REDIS_URL, or are started for the run and stopped after it.
Topics, consumer groups and Redis keys carry a random prefix and are removed at the end.`;

export const LOGS_HELP = 'Logs (warn and up) go to stderr with the progress line; QUOTAFLOW_LOG=info shows more.';

// ─── options ────────────────────────────────────────────────────────────────────────────────────

type OptionSpecs = Record<string, { type: 'string' } | { type: 'boolean' }>;
type OptionValues<O extends OptionSpecs> = { [K in keyof O]?: O[K] extends { type: 'string' } ? string : boolean };

/**
 * The command line's options, or the exit code when there is nothing to run: 0 after printing `help`
 * for -h/--help, 2 after saying what is wrong with them.
 */
export function benchArgs<O extends OptionSpecs>(help: string, options: O): OptionValues<O> | number {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ options: { ...options, help: { type: 'boolean', short: 'h' } } }).values as Record<string, string | boolean | undefined>;
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n\n${help}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(help);
    return 0;
  }
  return values as OptionValues<O>;
}

/** An option's whole number from `min` to `max` (`_` allowed as a separator), undefined when not given, null (said on stderr) when invalid. */
export function wholeNumber(option: string, raw: string | undefined, min: number, max: number): number | undefined | null {
  if (raw === undefined) return undefined;
  const n = Number(raw.replace(/_/g, ''));
  if (!Number.isInteger(n) || n < min || n > max) {
    process.stderr.write(`${option} ${JSON.stringify(raw)} is not a whole number from ${int(min)} to ${int(max)}\n`);
    return null;
  }
  return n;
}

// ─── memory ─────────────────────────────────────────────────────────────────────────────────────

/**
 * Two full GCs (the second collects what the first's finalizers freed), before reading memory. A
 * process started with --expose-gc has `gc`; any other turns it on here.
 */
export function collect(): void {
  let gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
  gc();
}

// ─── Ctrl-C ─────────────────────────────────────────────────────────────────────────────────────

let stopping = false;

/** True once Ctrl-C was pressed: the benchmark is cleaning up. */
export const stopRequested = () => stopping;

/** Throws once Ctrl-C was pressed, so the loop unwinds to the `finally` that stops what it started. */
export function checkAbort(): void {
  if (stopping) throw new Error('stopped by Ctrl-C');
}

/**
 * The first Ctrl-C asks the benchmark to stop (checkAbort throws from then on, `onStop` runs, e.g.
 * to stop a child); a second one exits at once.
 */
export function stopOnCtrlC(onStop?: () => void): void {
  process.on('SIGINT', () => {
    if (stopping) process.exit(130);
    stopping = true;
    onStop?.();
    process.stderr.write('\nstopping: cleaning up what the benchmark started (Ctrl-C again to force)\n');
  });
}

/** Runs a benchmark's main and exits with its code; a failure or a Ctrl-C is said on stderr. */
export function runMain(name: string, main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      if (stopping) {
        process.stderr.write(`\n${name} benchmark stopped by Ctrl-C; everything it started is stopped, no report written\n`);
        process.exit(130);
      }
      process.stderr.write(`\n${name} benchmark failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}

// ─── Redis chores ───────────────────────────────────────────────────────────────────────────────

export async function redisVersion(redis: RedisClient): Promise<string | undefined> {
  try {
    return /redis_version:(\S+)/.exec(await redis.info('server'))?.[1];
  } catch {
    return undefined;
  }
}

/** Removes every key under `prefix` (what a benchmark wrote to a Redis it did not start). */
export async function cleanRedis(redis: RedisClient, prefix: string, count = 1_000): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', count);
    cursor = next;
    if (keys.length) await redis.unlink(...keys);
  } while (cursor !== '0');
}

// ─── what every results file records ────────────────────────────────────────────────────────────

/** The repository root: commands are written as typed there. */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** When and how a benchmark was started, taken first thing in main. */
export interface RunInfo {
  /** The command that runs this benchmark alone, from the repository root. */
  command: string;
  /** The command that was typed, when `npm run bench` started it. */
  via: string | undefined;
  /** ISO time of the start, to the second. */
  date: string;
  began: number;
  loadAtStart: number;
}

/** Set by ops/bench/run.ts for the benchmarks it starts: the command that was typed. */
export const VIA_ENV = 'QUOTAFLOW_BENCH_VIA';

export function runInfo(file: string): RunInfo {
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  return {
    command: ['npx tsx', relative(ROOT, file), ...process.argv.slice(2).map(quote)].join(' '),
    via: process.env[VIA_ENV] || undefined,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    began: Date.now(),
    loadAtStart: os.loadavg()[0]!,
  };
}

/**
 * The machine, Node, and (when given) the Kafka and Redis the figures were measured on, with the load
 * average at the start and now, for a results file.
 */
export function machineLine(run: RunInfo, services?: { stack: Stack; redisVersion: string | undefined }): string {
  const cpu = os.cpus();
  const machine = `Machine: ${cpu.length} cores (${cpu[0]?.model.trim() ?? 'unknown CPU'}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB memory, ` +
    `load average ${run.loadAtStart.toFixed(2)} at the start and ${os.loadavg()[0]!.toFixed(2)} at the end (the machine is shared: figures are noisy); ` +
    `Node ${process.version} on ${process.platform}/${process.arch}`;
  if (!services) return `${machine}; no Kafka or Redis (in-process only).`;
  const { stack } = services;
  const onHost = stack.kafka.source !== 'external' || stack.redis.source !== 'external';
  return `${machine}; Kafka ${stack.kafka.version ?? '(version unknown)'} (${stack.kafka.source}${stack.kafka.source === 'external' ? `: ${stack.brokers.join(',')}` : ', one broker'}), ` +
    `Redis ${services.redisVersion ?? '(version unknown)'} (${stack.redis.source})${onHost ? '; the services it started run on this machine too' : ''}.`;
}

/** "Generated by `…` on … in … s": the command, its date and how long it took. */
export function generatedLine(run: RunInfo): string {
  const how = run.via ? `\`${run.via}\` (which ran \`${run.command}\`)` : `\`${run.command}\``;
  return `Generated by ${how} on ${run.date} in ${elapsedS(run).toFixed(0)} s.`;
}

export const elapsedS = (run: RunInfo) => (Date.now() - run.began) / 1000;

/** Writes a results file and returns how to name it on the console (relative to the repository when inside it). */
export function writeReport(outFile: string, lines: readonly string[]): string {
  mkdirSync(dirname(outFile), { recursive: true });
  writeFileSync(outFile, lines.join('\n'));
  const shown = relative(ROOT, outFile);
  return shown.startsWith('..') ? outFile : shown;
}
