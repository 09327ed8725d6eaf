/**
 * `npm run bench`: every benchmark, one after the other (each starts and stops its own stack, so
 * none measures while another runs), then where their results went. Never part of `npm test`.
 *
 *   npm run bench                  # the full run
 *   npm run bench -- --quick       # smaller sizes, one run each
 *   npm run bench -- --only gateway,aggregator
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const BENCHES = [
  { name: 'resolve', file: 'resolve.ts', quickArgs: [] as string[], what: 'policy resolution, ns per request' },
  { name: 'gateway', file: 'gateway.ts', quickArgs: ['--quick'], what: 'checks/s vs an Envoy-style Redis limiter, decision latency, overshoot' },
  { name: 'aggregator', file: 'aggregator.ts', quickArgs: ['--quick'], what: 'events/s draining a backlog vs a bare kafkajs consumer, memory per counter' },
];

const HELP = `Usage: npm run bench -- [--quick] [--only NAME,...]

Runs the benchmarks in turn and writes their results under ops/bench/results/ (linked from the README):
${BENCHES.map((b) => `  ${b.name.padEnd(11)} ${b.what}`).join('\n')}

  --quick       smaller sizes and one run each (about 3 minutes in all)
  --only LIST   only these benchmarks, e.g. --only gateway
`;

const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  process.stdout.write(HELP);
  process.exit(0);
}
const quick = args.includes('--quick');
const onlyAt = args.indexOf('--only');
const only = onlyAt >= 0 ? new Set((args[onlyAt + 1] ?? '').split(',')) : undefined;
const unknown = [...(only ?? [])].filter((n) => !BENCHES.some((b) => b.name === n));
if (unknown.length) {
  process.stderr.write(`bench: no benchmark named ${unknown.join(', ')}\n  → choose from ${BENCHES.map((b) => b.name).join(', ')}\n`);
  process.exit(2);
}

const started = Date.now();
const failed: string[] = [];
for (const b of BENCHES) {
  if (only && !only.has(b.name)) continue;
  process.stdout.write(`\n━━ ${b.name}: ${b.what}\n\n`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(HERE, b.file), ...(quick ? b.quickArgs : [])], { stdio: 'inherit' });
  if (r.status !== 0) failed.push(`${b.name} (exit ${r.status ?? r.signal})`);
  if (r.signal === 'SIGINT') break;
}
process.stdout.write(`\nbench: done in ${Math.round((Date.now() - started) / 1000)} s; results in ops/bench/results/${failed.length ? `; FAILED: ${failed.join(', ')}` : ''}\n`);
process.exit(failed.length ? 1 : 0);
