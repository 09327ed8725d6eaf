/**
 * Resolution micro-benchmark: ns per resolve() for each shipped policy, on a rotating set of
 * realistic requests (named APIs, routes, headers). Prints the median of several runs and writes
 * ops/bench/results/resolve.md. Run: npx tsx ops/bench/resolve.ts [--quick] [--out FILE]
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { compilePolicy, parsePolicyText, resolve, type ResolveRequest } from '../../src/policy/index.ts';
import { benchArgs, generatedLine, machineLine, median, runInfo, writeReport } from './common.ts';

const SELF = fileURLToPath(import.meta.url);
const HERE = dirname(SELF);
const POLICIES = join(HERE, '..', 'policies');

const HELP = `Usage: npx tsx ops/bench/resolve.ts [--quick] [--out FILE]

ns per resolve() (API match, rule, subjects, tenant and counter key) for each policy under
ops/policies, on a mix of realistic requests; the median of several runs with min and max.
No Kafka or Redis.

Options:
  --quick     3 runs of 300,000 calls per policy instead of 7 of 1,000,000
  --out FILE  where to write the report (default ops/bench/results/resolve.md)
  -h, --help  this text
`;

const info = runInfo(SELF);
const values = benchArgs(HELP, { quick: { type: 'boolean' }, out: { type: 'string' } });
if (typeof values === 'number') process.exit(values);
const RUNS = values.quick ? 3 : 7;
const OPS = values.quick ? 300_000 : 1_000_000;
const outFile = resolvePath(values.out ?? join(HERE, 'results', 'resolve.md'));

const CASES: Record<string, ResolveRequest[]> = {
  'kore-automation-ai.yaml': [
    { api: 'Bot Export', subjects: { account: 'acct-1', bot: 'st-8a7c' } },
    { api: 'Insert Data', subjects: { account: 'acct-1', table: 'orders' } },
    { api: 'Bot Export Status', subjects: { account: 'acct-2', request_id: 'ds-1f2e' } },
    { api: 'Get Bots', subjects: { account: 'acct:with:colons' } },
  ],
  'kore-contact-center-ai.yaml': [
    { api: 'WFM APIs', subjects: { account: 'acct-1' } },
    { api: 'Unlisted API', subjects: { account: 'acct-2' } },
  ],
  'kore-case-management.yaml': [{ api: 'Create Case', subjects: { account: 'acct-1' } }],
  'kore-quality-ai.yaml': [{ api: 'Raw Data API', subjects: { account: 'acct-1' } }],
  'bolna.yaml': [
    { method: 'GET', path: '/v2/agent/3c90c3cc-0d44/executions?page=2', subjects: { organization: 'org-1', user: 'u-1' } },
    { method: 'POST', path: '/call', subjects: { user: 'u-2' } },
    { method: 'GET', path: '/batches/42', subjects: { organization: 'org-2', user: 'u-3' } },
  ],
  'talkpilot.yaml': [
    { method: 'GET', path: '/agents', headers: { 'x-api-key': 'tp_live_4f9a8b' } },
    { method: 'PUT', path: '/forwarding-slots', headers: { 'x-api-key': 'tp_live_example_high_volume' } },
  ],
};

const rows: string[] = [];
let sink = 0;
for (const [file, requests] of Object.entries(CASES)) {
  const policy = compilePolicy(parsePolicyText(readFileSync(join(POLICIES, file), 'utf8'), file));
  for (const r of requests) if (resolve(policy, r).kind !== 'resolved') throw new Error(`${file}: ${JSON.stringify(r)} does not resolve`);
  const n = requests.length;
  for (let i = 0; i < 200_000; i++) sink += resolve(policy, requests[i % n]!).kind.length; // warm up the JIT
  const samples: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < OPS; i++) sink += resolve(policy, requests[i % n]!).kind.length;
    samples.push(Number(process.hrtime.bigint() - start) / OPS);
  }
  const line = `| ${file} | ${n} | ${median(samples).toFixed(0)} | ${Math.min(...samples).toFixed(0)} | ${Math.max(...samples).toFixed(0)} |`;
  rows.push(line);
  process.stdout.write(`${file.padEnd(30)} median ${median(samples).toFixed(0)} ns/op  (min ${Math.min(...samples).toFixed(0)}, max ${Math.max(...samples).toFixed(0)}; ${RUNS} runs × ${OPS} ops)\n`);
}
if (sink === 0) process.stdout.write('\n');

const table = [
  '# resolve() benchmark',
  '',
  `ns per \`resolve(policy, request)\` (API match, rule, subjects, tenant and counter key, overrides), median of ${RUNS} runs of ${OPS.toLocaleString('en')} calls over each policy's request mix, after 200,000 calls of warm-up.`,
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
process.stdout.write(`Wrote ${writeReport(outFile, table)}.\n`);
