/**
 * `npm run bench`: every benchmark, one after the other (each starts and stops its own stack, so
 * none measures while another runs), then where their results went and how long each took. Never
 * part of `npm test`.
 *
 *   npm run bench                  # the full run
 *   npm run bench -- --quick       # smaller sizes, one run each
 *   npm run bench -- --only gateway,aggregator
 *   npm run bench -- --out-dir /tmp/bench   # results elsewhere (the committed ones stay as they are)
 *   npm run bench -- --kafka-clients kafkajs,platformatic   # the Kafka benchmarks once per client, side by side
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isKafkaClientName } from '../../src/kafka/client.ts';
import { KAFKA_CLIENTS, type KafkaClientName } from '../../src/kafka/port.ts';
import { perClientReport, type ClientRun } from './common/clients.ts';
import { FAILURE_ENV } from './common/cli.ts';
import { RESULTS_DIR, VIA_ENV, writeReport } from './common/report.ts';

const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * The benchmarks, in the order they run. A new one is a line here: its folder's main.ts writes
 * `<name>.md` under ops/bench/results/ by default and takes `--out FILE`, `--quick` (its
 * `quickArgs`), `--help`, and `--kafka-client NAME` when it is `perClient`.
 */
const BENCHES = [
  { name: 'resolve', quickArgs: ['--quick'], perClient: false, what: 'policy resolution, ns per request' },
  {
    name: 'gateway',
    quickArgs: ['--quick'],
    perClient: true,
    what: 'checks/s vs Redis-backed peers (Envoy-style, rate-limiter-flexible), decision latency, overshoot',
  },
  {
    name: 'aggregator',
    quickArgs: ['--quick'],
    perClient: true,
    what: 'events/s draining a backlog vs a bare consumer of the same Kafka client; replay speed; memory per counter at 100,000 and 1,000,000 counters',
  },
];

const DEFAULT_CLIENT: KafkaClientName = 'kafkajs';

const HELP = `Usage: npm run bench -- [--quick] [--only NAME,...] [--out-dir DIR] [--kafka-clients LIST]

Runs the benchmarks in turn and writes their results under ops/bench/results/ (linked from the README):
${BENCHES.map((b) => `  ${b.name.padEnd(11)} ${b.what}`).join('\n')}

  --quick               smaller sizes and one run each (under 2 minutes in all on 2 quiet cores; the full run: under 10)
  --only LIST           only these benchmarks, e.g. --only gateway
  --out-dir DIR         write the results files to DIR instead
  --kafka-clients LIST  run the gateway and aggregator benchmarks once per Kafka client, e.g. kafkajs,platformatic
                        (default kafkajs); with several, each results file holds a section per client
`;

/** The parsed command line, or the exit code when there is nothing to run. */
function parse(args: string[]): { quick: boolean; only?: Set<string>; outDir?: string; clients: KafkaClientName[] } | number {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(HELP);
    return 0;
  }
  const flagValue = (flag: string) => {
    const at = args.indexOf(flag);
    return at >= 0 ? (args[at + 1] ?? '') : undefined;
  };
  const fail = (line: string) => {
    process.stderr.write(`bench: ${line}\n`);
    return 2;
  };
  const onlyList = flagValue('--only');
  const only = onlyList !== undefined ? new Set(onlyList.split(',')) : undefined;
  const unknown = [...(only ?? [])].filter((n) => !BENCHES.some((b) => b.name === n));
  if (unknown.length) return fail(`no benchmark named ${unknown.join(', ')}\n  → choose from ${BENCHES.map((b) => b.name).join(', ')}`);
  const outDir = flagValue('--out-dir');
  if (outDir === '') return fail('--out-dir needs a directory');
  const clients = [
    ...new Set(
      (flagValue('--kafka-clients') ?? DEFAULT_CLIENT)
        .split(',')
        .map((c) => c.trim())
        .filter(Boolean),
    ),
  ];
  const wrong = clients.filter((c) => !isKafkaClientName(c));
  if (clients.length === 0 || wrong.length)
    return fail(
      `--kafka-clients ${wrong.length ? `names no Kafka client quotaflow has: ${wrong.join(', ')}` : 'needs a list'}\n  → choose from ${KAFKA_CLIENTS.join(', ')}`,
    );
  return { quick: args.includes('--quick'), only, outDir: outDir === undefined ? undefined : resolvePath(outDir), clients: clients as KafkaClientName[] };
}

/**
 * Runs one benchmark's main.ts to its end, with the console as its own; its exit code, and why it
 * failed (the line it writes to `failureFile`).
 */
function runBench(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  failureFile: string,
): Promise<{ status: number | null; signal: NodeJS.Signals | null; failure?: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(HERE, name, 'main.ts'), ...args], {
    stdio: 'inherit',
    env: { ...env, [FAILURE_ENV]: failureFile },
  });
  return new Promise((resolveRun) => {
    child.on('exit', (status, signal) => {
      const failure = existsSync(failureFile) ? readFileSync(failureFile, 'utf8').replace(/\s+/g, ' ').trim() : undefined;
      rmSync(failureFile, { force: true });
      resolveRun({ status, signal, failure });
    });
  });
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const opts = parse(args);
  if (typeof opts === 'number') return opts;
  const started = Date.now();
  const failed: string[] = [];
  const took: string[] = [];
  // Each results file names the command that was typed, beside the one that ran it.
  const typed = ['npm run bench', ...(args.length ? ['--', ...args] : [])].join(' ');
  const env = { ...process.env, [VIA_ENV]: typed };
  // The benchmark running gets the terminal's Ctrl-C too and stops what it started: wait for it.
  process.on('SIGINT', () => {});
  const staging = mkdtempSync(join(os.tmpdir(), 'quotaflow-bench-'));
  try {
    benches: for (const b of BENCHES) {
      if (opts.only && !opts.only.has(b.name)) continue;
      const outFile = join(opts.outDir ?? RESULTS_DIR, `${b.name}.md`);
      const clients = b.perClient ? opts.clients : [DEFAULT_CLIENT];
      // Several clients: each run writes its own report, combined into the results file afterwards.
      const combined = clients.length > 1;
      const runs: ClientRun[] = [];
      for (const client of clients) {
        const label = combined ? `${b.name} (${client})` : b.name;
        process.stdout.write(`\n━━ ${label}: ${b.what}\n\n`);
        const clientOut = combined ? join(staging, `${b.name}.${client}.md`) : outFile;
        const benchArgs = [
          ...(opts.quick ? b.quickArgs : []),
          ...(client === DEFAULT_CLIENT ? [] : ['--kafka-client', client]),
          ...(combined || opts.outDir ? ['--out', clientOut] : []),
        ];
        const t0 = Date.now();
        const r = await runBench(b.name, benchArgs, env, join(staging, `${b.name}.${client}.failure`));
        took.push(`${label} ${Math.round((Date.now() - t0) / 1000)} s`);
        if (r.status !== 0) failed.push(`${label} (exit ${r.status ?? r.signal})`);
        if (r.signal === 'SIGINT' || r.status === 130) break benches;
        const report = r.status === 0 && existsSync(clientOut) ? readFileSync(clientOut, 'utf8') : undefined;
        runs.push({ client, report, failure: report === undefined ? (r.failure ?? `exit ${r.status ?? r.signal}`) : undefined });
      }
      const lines = combined ? perClientReport(runs, typed) : undefined;
      if (lines) process.stdout.write(`Wrote ${writeReport(outFile, lines)}: ${clients.join(', ')} side by side.\n`);
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  process.stdout.write(
    `\nbench: done in ${Math.round((Date.now() - started) / 1000)} s (${took.join(', ')}); results in ${opts.outDir ?? 'ops/bench/results/'}${failed.length ? `; FAILED: ${failed.join(', ')}` : ''}\n`,
  );
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
