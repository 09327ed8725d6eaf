/**
 * A benchmark's command line and lifetime: its options, the help text every benchmark on services
 * shares, logging, Ctrl-C, and how main's outcome becomes the exit code.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isKafkaClientName } from '../../../src/kafka/client.ts';
import { KAFKA_CLIENTS, type KafkaClientName } from '../../../src/kafka/port.ts';
import { configureLogging, type Level } from '../../../src/log.ts';
import { int } from './figures.ts';

/** Where a benchmark on services gets them, for its --help. */
export const SERVICES_HELP = `Kafka and Redis come from KAFKA_BROKERS / REDIS_URL, or are started for the run and stopped after it.
Topics, consumer groups and Redis keys carry a random prefix and are removed at the end.`;

export const LOGS_HELP = 'Logs (warn and up) go to stderr with the progress line; QUOTAFLOW_LOG=info shows more.';

/** --kafka-client's lines of a --help whose option texts start at `column`. */
export function kafkaClientHelp(column: number): string {
  const pad = ' '.repeat(column);
  return `  --kafka-client NAME\n${pad}the Kafka client library behind quotaflow's Kafka port, for every producer,\n${pad}consumer and admin of the run: ${KAFKA_CLIENTS.join(' or ')} (default kafkajs)`;
}

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

/** --kafka-client's value, kafkajs when not given, null (said on stderr) when it names no client quotaflow has. */
export function kafkaClientOption(raw: string | undefined): KafkaClientName | null {
  if (raw === undefined) return 'kafkajs';
  if (isKafkaClientName(raw)) return raw;
  process.stderr.write(`--kafka-client ${JSON.stringify(raw)} is not a Kafka client quotaflow has: use ${KAFKA_CLIENTS.join(' or ')}\n`);
  return null;
}

/** QUOTAFLOW_LOG (default warn), for this process and the children it starts. */
export function configureBenchLogging(): Level | 'silent' {
  const level = (process.env.QUOTAFLOW_LOG as Level | 'silent' | undefined) ?? 'warn';
  configureLogging({ level, format: 'pretty' });
  return level;
}

// ─── Ctrl-C ─────────────────────────────────────────────────────────────────────────────────────

let stopping = false;

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

/** Set by ops/bench/run.ts: the file a failed benchmark writes its one-line reason to, for the results file. */
export const FAILURE_ENV = 'QUOTAFLOW_BENCH_FAILURE';

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
      const failureFile = process.env[FAILURE_ENV];
      if (failureFile) writeFileSync(failureFile, e instanceof Error ? e.message : String(e));
      process.exit(1);
    },
  );
}
