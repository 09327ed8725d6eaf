/**
 * Resolution micro-benchmark: ns per resolve() for each shipped policy, on a rotating set of
 * realistic requests (named APIs, routes, headers). Prints the median of several runs and writes
 * ops/bench/results/resolve.md. Run: npx tsx ops/bench/resolve/main.ts [--quick] [--out FILE]
 */
import { readFileSync } from 'node:fs';
import { join, resolve as resolvePath } from 'node:path';
import { compilePolicy, parsePolicyText, resolve, type ResolveRequest } from '../../../src/policy/index.ts';
import { benchArgs, runMain } from '../common/cli.ts';
import { median } from '../common/figures.ts';
import { generatedLine, machineLine, RESULTS_DIR, ROOT, runInfo, writeReport } from '../common/report.ts';
import { CASES } from './cases.ts';

const POLICIES = join(ROOT, 'policies');
const WARMUP = 200_000;

const HELP = `Usage: npx tsx ops/bench/resolve/main.ts [--quick] [--out FILE]

ns per resolve() (API match, rule, subjects, tenant and counter key) for each policy under
policies, on a mix of realistic requests; the median of several runs with min and max.
No Kafka or Redis.

Options:
  --quick     3 runs of 300,000 calls per policy instead of 7 of 1,000,000
  --out FILE  where to write the report (default ops/bench/results/resolve.md)
  -h, --help  this text
`;

let sink = 0;

/** ns per call over `runs` runs of `ops` calls, after the JIT warm-up. */
function nsPerCall(file: string, requests: ResolveRequest[], runs: number, ops: number): number[] {
  const policy = compilePolicy(parsePolicyText(readFileSync(join(POLICIES, file), 'utf8'), file));
  for (const r of requests) if (resolve(policy, r).kind !== 'resolved') throw new Error(`${file}: ${JSON.stringify(r)} does not resolve`);
  const n = requests.length;
  for (let i = 0; i < WARMUP; i++) sink += resolve(policy, requests[i % n]!).kind.length;
  const samples: number[] = [];
  for (let run = 0; run < runs; run++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < ops; i++) sink += resolve(policy, requests[i % n]!).kind.length;
    samples.push(Number(process.hrtime.bigint() - start) / ops);
  }
  return samples;
}

async function main(): Promise<number> {
  const info = runInfo(import.meta.url);
  const values = benchArgs(HELP, { quick: { type: 'boolean' }, out: { type: 'string' } });
  if (typeof values === 'number') return values;
  const runs = values.quick ? 3 : 7;
  const ops = values.quick ? 300_000 : 1_000_000;
  const outFile = resolvePath(values.out ?? join(RESULTS_DIR, 'resolve.md'));

  const rows: string[] = [];
  for (const [file, requests] of Object.entries(CASES)) {
    const samples = nsPerCall(file, requests, runs, ops);
    const [mid, min, max] = [median(samples), Math.min(...samples), Math.max(...samples)].map((x) => x.toFixed(0));
    rows.push(`| ${file} | ${requests.length} | ${mid} | ${min} | ${max} |`);
    process.stdout.write(`${file.padEnd(30)} median ${mid} ns/op  (min ${min}, max ${max}; ${runs} runs × ${ops} ops)\n`);
  }
  if (sink === 0) process.stdout.write('\n');

  const report = [
    '# resolve() benchmark',
    '',
    `ns per \`resolve(policy, request)\` (API match, rule, subjects, tenant and counter key, overrides), median of ${runs} runs of ${ops.toLocaleString('en')} calls over each policy's request mix, after ${WARMUP.toLocaleString('en')} calls of warm-up.`,
    '',
    generatedLine(info),
    '',
    machineLine(info),
    '',
    '| policy | requests in mix | median ns/op | min | max |',
    '|---|---:|---:|---:|---:|',
    ...rows,
    '',
  ];
  process.stdout.write(`Wrote ${writeReport(outFile, report)}.\n`);
  return 0;
}

runMain('resolve', main);
