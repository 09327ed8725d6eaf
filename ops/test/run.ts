/**
 * `npm test`: unit tests, then integration tests against one real Kafka broker and one real Redis
 * shared by the whole run (src/stack decides where they come from and logs it). The stack starts
 * while the unit tests run. At the end it checks that no process it started is left, and prints one
 * closing line. It fails when any test fails, when the integration tests were skipped or missing,
 * or when a service outlived the run.
 *
 *   tsx ops/test/run.ts            all tests
 *   tsx ops/test/run.ts --unit     unit tests only (no Kafka, no Redis)
 *   tsx ops/test/run.ts FILE...    only these test files (the stack starts if one is an integration test)
 *   --kafka-clients LIST           the Kafka clients the integration tests run with, one pass each
 *                                  (default: every client quotaflow has; env QUOTAFLOW_TEST_KAFKA_CLIENTS)
 */
import { spawn } from 'node:child_process';
import { readdir, readFile, rm, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { configureLogging, logger } from '../../src/log.ts';
import { isQuotaflowError } from '../../src/errors.ts';
import { resolveStack, type Stack } from '../../src/stack/index.ts';
import { pidAlive } from '../../src/stack/process.ts';
import { PROJECT_ROOT } from '../../src/stack/paths.ts';
import { KAFKA_CLIENTS } from '../../src/kafka/port.ts';
import { isKafkaClientName } from '../../src/kafka/client.ts';

/** Integration files that run in the first client's pass only. */
const ONCE = ['test/integration/examples.test.ts'];

interface Counts {
  passed: number;
  failed: number;
  skipped: number;
  todo: number;
  failures: string[];
}

const HELP = `Usage: npm test [-- --unit] [-- --kafka-clients LIST] [-- FILE...]
Runs test/unit (pure logic) and test/integration (real Kafka and Redis, started for the run unless
KAFKA_BROKERS / REDIS_URL name existing ones), the integration tests once per Kafka client
(${KAFKA_CLIENTS.join(', ')}; --kafka-clients or QUOTAFLOW_TEST_KAFKA_CLIENTS picks some).
Exit code 0 only if every test ran and passed.`;

async function findTests(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await findTests(path)));
    else if (entry.name.endsWith('.test.ts')) out.push(path);
  }
  return out.sort();
}

/**
 * The checks that keep the code as it is meant to be, before any test: Biome's linter, formatter and
 * import-cycle rule (biome.json), and the type checker. Each failure counts as one failed test.
 */
async function runChecks(): Promise<Counts> {
  const counts: Counts = { passed: 0, failed: 0, skipped: 0, todo: 0, failures: [] };
  const bin = (name: string) => join(PROJECT_ROOT, 'node_modules', '.bin', name);
  for (const [what, cmd, args] of [
    ['lint, format and import cycles (biome check)', bin('biome'), ['check', '--no-errors-on-unmatched', '--diagnostic-level=warn', '.']],
    ['types (tsc --noEmit)', bin('tsc'), ['--noEmit']],
  ] as const) {
    process.stdout.write(`\n▶ ${what}\n`);
    const child = spawn(cmd, [...args], { cwd: PROJECT_ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
    const code = await new Promise<number>((res) => child.once('exit', (c) => res(c ?? 1)));
    if (code === 0) {
      counts.passed++;
      process.stdout.write(`✔ ${what}\n`);
    } else {
      counts.failed++;
      counts.failures.push(`${what} failed: run \`npx biome check --write .\` for what it can fix, \`npm run typecheck\` for types`);
    }
  }
  return counts;
}

async function runNodeTests(label: string, files: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Counts> {
  const dir = await mkdtemp(join(tmpdir(), 'quotaflow-test-'));
  const summaryFile = join(dir, 'summary.json');
  process.stdout.write(`\n▶ ${label}: ${files.length} file(s)\n`);
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--test',
      `--test-timeout=${timeoutMs}`,
      '--test-reporter=spec',
      '--test-reporter-destination=stdout',
      `--test-reporter=${join(PROJECT_ROOT, 'ops/test/summary-reporter.mjs')}`,
      `--test-reporter-destination=${summaryFile}`,
      ...files.map((f) => relative(PROJECT_ROOT, f)),
    ],
    { cwd: PROJECT_ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] },
  );
  const code = await new Promise<number>((res) => child.once('exit', (c) => res(c ?? 1)));
  let counts: Counts;
  try {
    counts = JSON.parse(await readFile(summaryFile, 'utf8')) as Counts;
  } catch {
    counts = { passed: 0, failed: 1, skipped: 0, todo: 0, failures: [`${label}: the test runner exited with ${code} and wrote no summary`] };
  }
  if (code !== 0 && counts.failed === 0) {
    counts.failed = 1;
    counts.failures.push(`${label}: the test runner exited with ${code}`);
  }
  await rm(dir, { recursive: true, force: true });
  return counts;
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    options: { unit: { type: 'boolean' }, 'kafka-clients': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help) {
    process.stdout.write(HELP + '\n');
    return 0;
  }
  const clients = (values['kafka-clients'] ?? (process.env.QUOTAFLOW_TEST_KAFKA_CLIENTS || KAFKA_CLIENTS.join(',')))
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean);
  const unknown = clients.filter((c) => !isKafkaClientName(c));
  if (unknown.length || clients.length === 0) {
    process.stderr.write(
      `npm test: --kafka-clients ${clients.join(',')}: not a Kafka client quotaflow has (${unknown.join(', ')})\n  → use some of ${KAFKA_CLIENTS.join(', ')}\n`,
    );
    return 2;
  }
  configureLogging({ level: (process.env.QUOTAFLOW_LOG as 'info') ?? 'info', format: 'pretty' });
  const log = logger('test');

  const chosen = positionals.map((p) => resolve(p));
  const unitFiles = chosen.length ? chosen.filter((f) => !f.includes('/test/integration/')) : await findTests(join(PROJECT_ROOT, 'test/unit'));
  const integrationFiles = values.unit
    ? []
    : chosen.length
      ? chosen.filter((f) => f.includes('/test/integration/'))
      : await findTests(join(PROJECT_ROOT, 'test/integration'));
  const expectIntegration = !values.unit && chosen.length === 0;

  let stack: Stack | undefined;
  let stackError: unknown;
  // Bring the stack up while the unit tests run: they need neither Kafka nor Redis.
  const stackReady = integrationFiles.length
    ? resolveStack({ env: process.env, log: log.child('stack') }).then(
        (s) => {
          stack = s;
        },
        (e) => {
          stackError = e;
        },
      )
    : Promise.resolve();
  const stopStack = async () => {
    await stackReady;
    await stack?.stop();
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      void stopStack().finally(() => process.exit(130));
    });
  }

  const total: Counts = { passed: 0, failed: 0, skipped: 0, todo: 0, failures: [] };
  const add = (c: Counts) => {
    total.passed += c.passed;
    total.failed += c.failed;
    total.skipped += c.skipped;
    total.todo += c.todo;
    total.failures.push(...c.failures);
  };
  // Only when the whole suite (or the unit tests) runs: a file or two named on the command line is a quick look.
  if (chosen.length === 0) add(await runChecks());
  if (unitFiles.length) add(await runNodeTests('unit tests', unitFiles, process.env, 120_000));

  const passes: Counts[] = [];
  const startedAt = Date.now();
  await stackReady;
  if (integrationFiles.length) {
    if (!stack) {
      const e = stackError;
      process.stderr.write(`\n✖ could not bring up Kafka and Redis for the integration tests:\n  ${isQuotaflowError(e) ? e.describe() : String(e)}\n`);
      total.failed++;
      total.failures.push('integration stack did not start');
    } else {
      process.stdout.write(
        `\n▶ integration stack (${((Date.now() - startedAt) / 1000).toFixed(1)}s after unit tests): ` +
          `Kafka ${stack.kafka.version ?? '(version not reported)'} [${stack.kafka.source}] at ${stack.brokers.join(',')}, ` +
          `Redis ${stack.redis.version ?? ''} [${stack.redis.source}] at ${stack.redisUrl}\n`,
      );
      const env = {
        ...process.env,
        KAFKA_BROKERS: stack.brokers.join(','),
        REDIS_URL: stack.redisUrl,
        QUOTAFLOW_TEST_KAFKA_VERSION: stack.kafka.version ?? '',
        QUOTAFLOW_TEST_STACK_SOURCE: stack.kafka.source,
      };
      try {
        // Once per Kafka client: every test that talks to Kafka does it through the client named here.
        for (const [i, client] of clients.entries()) {
          // The examples test checks the documentation, not a client: it runs in the first pass only.
          const files = i === 0 ? integrationFiles : integrationFiles.filter((f) => !ONCE.some((name) => f.endsWith(name)));
          const pass = await runNodeTests(`integration tests with the ${client} Kafka client`, files, { ...env, QUOTAFLOW_KAFKA_CLIENT: client }, 900_000);
          passes.push(pass);
          add(pass);
        }
      } finally {
        await stopStack();
      }
      // No service this run started may outlive it.
      const deadline = Date.now() + 10_000;
      while (stack.pids.some(pidAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const orphans = stack.pids.filter(pidAlive);
      if (orphans.length) {
        total.failed++;
        total.failures.push(`processes still running after the stack stopped: ${orphans.join(', ')}`);
      } else if (stack.pids.length) {
        process.stdout.write(`✔ the ${stack.pids.length} service process(es) this run started are gone\n`);
      }
    }
  }

  const incomplete = passes.length < clients.length || passes.some((p) => p.passed === 0 || p.skipped > 0 || p.todo > 0);
  if (expectIntegration && (integrationFiles.length === 0 || incomplete)) {
    total.failed++;
    const counts = passes.map((p, i) => `${clients[i]}: passed ${p.passed}, skipped ${p.skipped}, todo ${p.todo}`).join('; ');
    total.failures.push(`integration tests did not all run (files: ${integrationFiles.length}; ${counts || 'no pass ran'})`);
  }

  process.stdout.write('\n');
  for (const f of total.failures) process.stdout.write(`✖ ${f}\n`);
  // The closing line CI reads.
  process.stdout.write(`tests: ${total.passed} passed, ${total.failed} failed, ${total.skipped} skipped\n`);
  return total.failed === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    process.stderr.write(`test runner failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
