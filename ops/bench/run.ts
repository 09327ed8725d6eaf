/**
 * `npm run bench`: every benchmark, one after the other (each starts and stops its own stack, so
 * none measures while another runs), then where their results went and how long each took. Never
 * part of `npm test`.
 *
 *   npm run bench                  # the full run
 *   npm run bench -- --quick       # smaller sizes, one run each
 *   npm run bench -- --only gateway,aggregator
 *   npm run bench -- --out-dir /tmp/bench   # results elsewhere (the committed ones stay as they are)
 */
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VIA_ENV } from './common.ts';

const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * The benchmarks, in the order they run. A new one is a line here: its file writes `<name>.md`
 * under ops/bench/results/ by default and takes `--out FILE`, `--quick` (its `quickArgs`) and
 * `--help`.
 */
const BENCHES = [
  { name: 'resolve', file: 'resolve.ts', quickArgs: ['--quick'], what: 'policy resolution, ns per request' },
  { name: 'gateway', file: 'gateway.ts', quickArgs: ['--quick'], what: 'checks/s vs Redis-backed peers (Envoy-style, rate-limiter-flexible), decision latency, overshoot' },
  { name: 'aggregator', file: 'aggregator.ts', quickArgs: ['--quick'], what: 'events/s draining a backlog vs a bare kafkajs consumer; replay speed; memory per counter at 100,000 and 1,000,000 counters' },
];

const HELP = `Usage: npm run bench -- [--quick] [--only NAME,...] [--out-dir DIR]

Runs the benchmarks in turn and writes their results under ops/bench/results/ (linked from the README):
${BENCHES.map((b) => `  ${b.name.padEnd(11)} ${b.what}`).join('\n')}

  --quick        smaller sizes and one run each (under 2 minutes in all on 2 quiet cores; the full run: under 10)
  --only LIST    only these benchmarks, e.g. --only gateway
  --out-dir DIR  write the results files to DIR instead
`;

const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  process.stdout.write(HELP);
  process.exit(0);
}
const quick = args.includes('--quick');
const valueOf = (flag: string) => {
  const at = args.indexOf(flag);
  return at >= 0 ? (args[at + 1] ?? '') : undefined;
};
const onlyList = valueOf('--only');
const only = onlyList !== undefined ? new Set(onlyList.split(',')) : undefined;
const unknown = [...(only ?? [])].filter((n) => !BENCHES.some((b) => b.name === n));
if (unknown.length) {
  process.stderr.write(`bench: no benchmark named ${unknown.join(', ')}\n  → choose from ${BENCHES.map((b) => b.name).join(', ')}\n`);
  process.exit(2);
}
const outDirArg = valueOf('--out-dir');
if (outDirArg === '') {
  process.stderr.write('bench: --out-dir needs a directory\n');
  process.exit(2);
}
const outDir = outDirArg === undefined ? undefined : resolvePath(outDirArg);

const started = Date.now();
const failed: string[] = [];
const took: string[] = [];
// Each results file names the command that was typed, beside the one that ran it.
const env = { ...process.env, [VIA_ENV]: ['npm run bench', ...(args.length ? ['--', ...args] : [])].join(' ') };
for (const b of BENCHES) {
  if (only && !only.has(b.name)) continue;
  process.stdout.write(`\n━━ ${b.name}: ${b.what}\n\n`);
  const benchArgs = [...(quick ? b.quickArgs : []), ...(outDir ? ['--out', join(outDir, `${b.name}.md`)] : [])];
  const t0 = Date.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(HERE, b.file), ...benchArgs], { stdio: 'inherit', env });
  took.push(`${b.name} ${Math.round((Date.now() - t0) / 1000)} s`);
  if (r.status !== 0) failed.push(`${b.name} (exit ${r.status ?? r.signal})`);
  if (r.signal === 'SIGINT' || r.status === 130) break;
}
process.stdout.write(
  `\nbench: done in ${Math.round((Date.now() - started) / 1000)} s (${took.join(', ')}); results in ${outDir ?? 'ops/bench/results/'}${failed.length ? `; FAILED: ${failed.join(', ')}` : ''}\n`,
);
process.exit(failed.length ? 1 : 0);
