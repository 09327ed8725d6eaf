/**
 * Every command example in the README and in every command's --help, run as a user would type it,
 * against the real stack (issue #12: an example must do what it claims). Each runs in bash from a
 * scratch directory with `quotaflow` on PATH (the package's bin), policies/ beside it, and the two
 * files the examples name (broken.yaml, halved.yaml).
 *
 * What the test changes in an example, and only this: addresses (any --brokers, KAFKA_BROKERS=,
 * REDIS_URL= and the ports 8080, 3000 and 9464 become the stack's or free ones). Topics, groups and
 * Redis keys get a prefix of the test's own through QUOTAFLOW_TOPIC_PREFIX and QUOTAFLOW_KEY_PREFIX.
 * A long-running command (stack up, aggregator, gateway, demo) is started, awaited until it says
 * it is up, used, and stopped with Ctrl-C (SIGINT), which must end it with exit code 0. The README's
 * `npm start` and `npm test` lines are not run here: `npm start` is `quotaflow demo` (its examples
 * run here, and demo.test.ts runs it), and `npm test` is what runs this test.
 *
 * The plan below says how each example is run and what it must show. An example no entry matches,
 * or an entry that matches no example, fails the test: the docs and this test move together.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMMANDS } from '../../src/cli/main.ts';
import { kafkaPort } from '../../src/kafka/client.ts';
import { freePort } from '../../src/stack/ports.ts';
import { PROJECT_ROOT } from '../../src/stack/paths.ts';
import { Redis } from 'ioredis';
import { services, testKafka, uniqueName } from '../support/integration.ts';
import { sleepUntil } from '../support/gateway.ts';
import { waitFor } from '../support/wait.ts';

// ── the examples ─────────────────────────────────────────────────────────────────────────────────

interface Example {
  /** Where it is written: "README" or "quotaflow <cmd> --help". */
  where: string;
  command: string;
  /** The output the README prints under a `$ command` line, if any. */
  output?: string[];
}

function readmeExamples(text: string): Example[] {
  const out: Example[] = [];
  const lines = text.split('\n');
  // A command is a line of a ```sh block, or a `$ ` line of any block (the others show output).
  let block: string | undefined;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith('```')) {
      block = block === undefined ? line.slice(3).trim() : undefined;
      continue;
    }
    if (block === undefined) continue;
    const prompt = line.startsWith('$ ');
    const cmd = prompt ? line.slice(2) : line;
    if (!(prompt || block === 'sh') || !/^(quotaflow|curl) /.test(cmd)) continue;
    const example: Example = { where: 'README', command: cmd };
    if (prompt) {
      const output: string[] = [];
      for (let j = i + 1; j < lines.length && !lines[j]!.startsWith('```') && !lines[j]!.startsWith('$ '); j++) output.push(lines[j]!);
      example.output = output;
    }
    out.push(example);
  }
  return out;
}

const helpExamples = (): Example[] => COMMANDS.flatMap((c) => c.examples.map((command) => ({ where: `quotaflow ${c.name} --help`, command })));

// ── how they run ─────────────────────────────────────────────────────────────────────────────────

interface Ctx {
  dir: string;
  env: NodeJS.ProcessEnv;
  brokers: string;
  redisUrl: string;
  ports: { gateway: number; upstream: number };
  upstreamHits: () => number;
  /** Examples run while another one is up (the three-node stack). */
  inside: Map<string, Example>;
  /** Deletes every Redis key the examples wrote. */
  loseRedis(): Promise<void>;
}

interface Run {
  code: number;
  out: string;
  err: string;
}

/** The example with its addresses pointed at the test's stack (the only change made to it). */
function localize(command: string, ctx: Ctx, brokers = ctx.brokers): string {
  // A gateway that says no --listen listens on 127.0.0.1:8080: the same address, made explicit.
  const listening =
    /quotaflow gateway /.test(command) && !/--listen /.test(command)
      ? command.replace(/quotaflow gateway /, 'quotaflow gateway --listen 127.0.0.1:8080 ')
      : command;
  return listening
    .replace(/--brokers \S+/g, `--brokers ${brokers}`)
    .replace(/KAFKA_BROKERS=\S+/g, `KAFKA_BROKERS=${brokers}`)
    .replace(/REDIS_URL=\S+/g, `REDIS_URL=${ctx.redisUrl}`)
    .replace(/127\.0\.0\.1:8080/g, `127.0.0.1:${ctx.ports.gateway}`)
    .replace(/127\.0\.0\.1:3000/g, `127.0.0.1:${ctx.ports.upstream}`)
    .replace(/--metrics-port 9464/g, '--metrics-port 0');
}

/** In a process group of its own, so that whatever is left of it can be killed at the end. */
function bash(command: string, ctx: Ctx, env: NodeJS.ProcessEnv = ctx.env): ChildProcess {
  return spawn('bash', ['-o', 'pipefail', '-c', command], { cwd: ctx.dir, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
}

/** The example without a trailing `# comment` (what the plan matches; bash runs it with the comment). */
const bare = (command: string) => command.replace(/\s+#\s.*$/s, '').trim();

function collect(child: ChildProcess): Promise<Run> & { out: () => string } {
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  // As a shell reports it: 128 + the signal's number for a process a signal ended.
  const done = new Promise<Run>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code: code ?? (signal ? 128 + osConstants.signals[signal] : 1), out, err })),
  );
  return Object.assign(done, { out: () => out + err });
}

async function runToEnd(command: string, ctx: Ctx, timeoutMs = 60_000): Promise<Run> {
  const child = bash(command, ctx);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    return await collect(child);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Starts a long-running example, waits for `ready` in its output, runs `use`, then Ctrl-C: SIGINT
 * to the example's process group, as a terminal sends it.
 */
async function serve(
  command: string,
  ctx: Ctx,
  ready: RegExp,
  use: (output: () => string) => Promise<void> = async () => {},
  env?: NodeJS.ProcessEnv,
  readyTimeoutMs = 90_000,
): Promise<Run> {
  const child = bash(command, ctx, env);
  const run = collect(child);
  try {
    await waitFor(`${command} to be up (${ready})`, () => ready.test(run.out()), { timeoutMs: readyTimeoutMs, everyMs: 100 });
    await use(run.out);
  } finally {
    // A command that already ended has nothing to stop: its exit code says how it ended.
    const signal = (pid: number, name: NodeJS.Signals) => {
      try {
        process.kill(pid, name);
      } catch {}
    };
    signal(-child.pid!, 'SIGINT');
    setTimeout(() => signal(-child.pid!, 'SIGKILL'), 60_000).unref();
  }
  return run;
}

/** `n` times the example's curl; the last reply's status line and headers. */
async function curl(command: string, ctx: Ctx, n: number): Promise<string[]> {
  const statuses: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await runToEnd(localize(command, ctx), ctx, 10_000);
    assert.equal(r.code, 0, r.err);
    statuses.push(r.out.split('\r\n')[0]!);
    if (i === n - 1) statuses.push(r.out);
  }
  return statuses;
}

interface Entry {
  /** Which examples this entry runs (matched without a trailing comment). */
  match: RegExp;
  /** Not run on its own: kept under this name for an entry that runs it while another example is up. */
  holds?: string;
  run?(example: Example, ctx: Ctx): Promise<void>;
}

const ok = (r: Run, what: string) => assert.equal(r.code, 0, `${what} exited ${r.code}\n${r.out}\n${r.err}`);
const exitsWith = (code: number, check?: (r: Run) => void) => async (e: Example, ctx: Ctx) => {
  const r = await runToEnd(localize(e.command, ctx), ctx);
  assert.equal(r.code, code, `${e.command} (${e.where}) exited ${r.code}, not ${code}\n${r.out}\n${r.err}`);
  check?.(r);
};
const UP = /listening on|joined the consumer group/;
const stopsCleanly = async (e: Example, ctx: Ctx, ready = UP, use?: (output: () => string) => Promise<void>) =>
  ok(await serve(localize(e.command, ctx), ctx, ready, use), e.command);

/**
 * `npm start` stopped by Ctrl-C: npm itself then ends by SIGINT (exit 130, whatever its script did),
 * so what says the demo stopped cleanly is its own last line.
 */
const npmStopsCleanly = async (e: Example, ctx: Ctx) => {
  const r = await serve(localize(e.command, ctx), ctx, DEMO_UP);
  assert.equal(r.code, 130, `${e.command} exited ${r.code}, not by npm's SIGINT\n${r.out}\n${r.err}`);
  assert.match(r.out + r.err, DEMO_STOPPED, `${e.command}: the demo did not stop cleanly\n${r.out}\n${r.err}`);
};
const DEMO_UP = /\] requests .* sent/;
const DEMO_STOPPED = /^Stopped everything the demo started\.$/m;

/** The plan, in the order the examples run: topics exist before the aggregator, replay before the demo writes any usage. */
const PLAN: Entry[] = [
  { match: /^quotaflow topics create$/, run: exitsWith(0) },
  { match: /^quotaflow topics create --brokers localhost:9092$/, run: exitsWith(0) },
  { match: /^KAFKA_BROKERS=\S+ quotaflow topics describe --topic-prefix staging\.$/, run: exitsWith(1, (r) => assert.match(r.out, /0 of 6 exist; 6 missing/)) },
  { match: /^quotaflow topics describe --json \| jq /, run: exitsWith(0) },
  {
    match: /^quotaflow policy validate policies\/\*\.yaml$/,
    run: exitsWith(0, (r) => assert.equal(r.out.split('\n').filter((l) => l.startsWith('ok ')).length, 6)),
  },
  {
    match: /^quotaflow policy validate broken\.yaml$/,
    run: exitsWith(1, (r) =>
      assert.deepEqual(r.out.trimEnd().split('\n'), [
        'FAIL  broken.yaml  1 problem:',
        '        rules[1].apis[0]: API "A" is already limited by rule "a"; an API belongs to one rule',
      ]),
    ),
  },
  {
    match: /^quotaflow policy explain /,
    run: async (e, ctx) => {
      const r = await runToEnd(e.command, ctx);
      ok(r, e.command);
      // The README's sample output, line by line, where it does not depend on the time it ran at.
      for (const line of e.output ?? [])
        if (line.trim() && !line.includes('...') && !/\d{2}:\d{2}|Retry-After|Reset/.test(line))
          assert.ok(r.out.includes(line), `"${line}" is not in the output:\n${r.out}`);
    },
  },
  { match: /^quotaflow limits /, run: exitsWith(0) },
  { match: /^(\S+=\S+ )*quotaflow aggregator /, run: (e, ctx) => stopsCleanly(e, ctx) },
  {
    match: /^quotaflow gateway --policy policies\/talkpilot\.yaml --listen 127\.0\.0\.1:8080$/,
    run: (e, ctx) =>
      stopsCleanly(e, ctx, UP, async () => {
        // The help's curl, 61 times: TalkPilot's 60 a minute per key, then its 429. The minute is a
        // fixed one (epoch-aligned): 61 curls that straddle its end would rightly all be admitted,
        // so they start in a minute with time enough left for all of them.
        if (Date.now() % 60_000 > 30_000) await sleepUntil(Math.ceil(Date.now() / 60_000) * 60_000 + 10);
        const curlExample = ctx.inside.get('talkpilot-curl')!;
        const replies = await curl(curlExample.command, ctx, 61);
        assert.ok(
          replies.slice(0, 60).every((s) => s.includes(' 200 ')),
          replies.slice(0, 60).join(', '),
        );
        assert.match(replies[60]!, / 429 /);
        assert.match(replies[61]!, /retry-after: \d+/i);
      }),
  },
  { match: /^curl -i -H 'X-API-Key: tp_live_1' /, holds: 'talkpilot-curl' },
  {
    match: /^quotaflow gateway --policy policies\/bolna\.yaml (--listen 127\.0\.0\.1:8080 )?--upstream http:\/\/127\.0\.0\.1:3000 --check-headers on/,
    run: (e, ctx) =>
      stopsCleanly(e, ctx, UP, async () => {
        const url = `http://127.0.0.1:${ctx.ports.gateway}/v2/agent/a1/executions`;
        const before = ctx.upstreamHits();
        const anonymous = await fetch(url);
        assert.equal(anonymous.status, 401, 'neither organization nor user: refused, not let through uncounted');
        const known = await fetch(url, { headers: { 'X-Quotaflow-Subjects': 'organization=o1&user=u1' } });
        assert.equal(known.status, 200);
        assert.equal(ctx.upstreamHits(), before + 1, 'only the identified request reached the upstream');
        assert.ok(known.headers.get('ratelimit-policy')?.includes('q=500'), "counted under the endpoint's 500 a minute");
      }),
  },
  {
    match: /^quotaflow gateway --policy policies\/kore-automation-ai\.yaml --listen 127\.0\.0\.1:8080/,
    run: (e, ctx) =>
      stopsCleanly(e, ctx, UP, async () => {
        const replies = await curl(ctx.inside.get('kore-curl')!.command, ctx, 61);
        assert.ok(
          replies.slice(0, 60).every((s) => s.includes(' 200 ')),
          replies.slice(0, 60).join(', '),
        );
        assert.match(replies[60]!, / 429 /);
        assert.match(replies[61]!, /You’ve exceeded the per-minute rate limit/);
      }),
  },
  { match: /^curl -i -H 'X-Quotaflow-Api: Bot Export' /, holds: 'kore-curl' },
  { match: /^quotaflow audit/, run: exitsWith(0) },
  {
    // "Redis lost its data": the test's keys go before each rebuild, as in the scenario the example is for.
    match: /^quotaflow replay --rebuild /,
    run: async (e, ctx) => {
      await ctx.loseRedis();
      await exitsWith(0, (r) => assert.match(r.out, /tenants written/))(e, ctx);
    },
  },
  { match: /^quotaflow replay --dry-run /, run: exitsWith(0) },
  { match: /^npm start/, run: npmStopsCleanly },
  {
    // Run to its end: what it claims is the JSON summary that jq then reads.
    match: /^quotaflow demo --duration \S+ --json \| jq /,
    run: async (e, ctx) => {
      const r = await runToEnd(localize(e.command, ctx), ctx, 180_000);
      ok(r, e.command);
      // jq's output: one pretty-printed object per tenant.
      const tenants = r.out
        .trim()
        .split(/\n(?=\{)/)
        .map((o) => JSON.parse(o) as { key: string; sent: number });
      assert.ok(tenants.length >= 2, r.out);
      assert.deepEqual(Object.keys(tenants[0]!), ['key', 'sent', 'refused', 'limitsHit']);
      assert.ok(
        tenants.every((t) => t.sent > 0),
        r.out,
      );
    },
  },
  {
    match: /^quotaflow demo/,
    run: async (e, ctx) => {
      const r = await serve(localize(e.command, ctx), ctx, DEMO_UP);
      ok(r, e.command);
      assert.match(r.out + r.err, DEMO_STOPPED);
    },
  },
  { match: /--replication 3$/, holds: 'replicated-topics' },
  {
    match: /^(QUOTAFLOW_STACK=local )?quotaflow stack up( +#.*)?$/,
    // A stack of its own: without KAFKA_BROKERS and REDIS_URL it starts one.
    run: async (e, ctx) => ok(await serve(e.command, ctx, /export REDIS_URL=/, undefined, withoutServices(ctx.env)), e.command),
  },
  // One region here: the status says there is no other, and how to get one.
  {
    match: /^quotaflow regions$/,
    run: exitsWith(0, (r) => {
      assert.match(r.out, /\(this region\)/);
      assert.match(r.err, /no other region's rollups on this cluster[\s\S]*→ run MirrorMaker 2/);
    }),
  },
  { match: /^quotaflow regions --window 1h --json$/, run: exitsWith(0, (r) => assert.equal(JSON.parse(r.out).windowMs, 3_600_000)) },
  {
    match: /^quotaflow stack up --regions east,west$/,
    run: async (e, ctx) =>
      ok(
        await serve(
          e.command,
          ctx,
          /# region west.*\nexport KAFKA_BROKERS=\S+ REDIS_URL=\S+\n/,
          async (output) => {
            const regions = [...output().matchAll(/# region (\w+).*\nexport KAFKA_BROKERS=(\S+) REDIS_URL=(\S+)/g)].map((m) => m.slice(1));
            assert.deepEqual(
              regions.map((r) => r[0]),
              ['east', 'west'],
            );
            assert.notEqual(regions[0]![1], regions[1]![1], 'a Kafka per region');
            assert.notEqual(regions[0]![2], regions[1]![2], 'a Redis per region');
            // MirrorMaker 2 between them: east's rollup topic has its copy on west.
            const rollup = `east.${ctx.env.QUOTAFLOW_TOPIC_PREFIX}quota.rollup`;
            const admin = kafkaPort({ brokers: regions[1]![1]!.split(','), clientId: uniqueName('ex-regions'), minLogLevel: 'nothing' }).admin();
            await admin.connect();
            try {
              await waitFor(`${rollup} on west`, async () => (await admin.listTopics()).includes(rollup), { timeoutMs: 60_000, everyMs: 500 });
            } finally {
              await admin.disconnect();
            }
          },
          withoutServices(ctx.env),
          300_000,
        ),
        e.command,
      ),
  },
  {
    match: /^quotaflow stack up --nodes 3$/,
    run: async (e, ctx) =>
      ok(
        await serve(
          e.command,
          ctx,
          /export REDIS_URL=/,
          async (output) => {
            // The topics help's example for a three-node cluster, against this one.
            const brokers = /export KAFKA_BROKERS=(\S+)/.exec(output())![1]!;
            const r = await runToEnd(localize(ctx.inside.get('replicated-topics')!.command, ctx, brokers), ctx);
            ok(r, 'topics create --replication 3');
            assert.match(r.out, /6 created/);
          },
          withoutServices(ctx.env),
        ),
        e.command,
      ),
  },
];

/** The environment without KAFKA_BROKERS and REDIS_URL: `quotaflow stack up` then starts a stack of its own. */
function withoutServices(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { KAFKA_BROKERS: _k, REDIS_URL: _r, ...rest } = env;
  return rest;
}

const BROKEN = `version: "1"
product: broken
identity: { user: {} }
tenant: user
refusal: { message: no }
apis: [{ name: A }]
rules:
  - { id: a, apis: [A], scope: user, limits: [{ limit: 1, window: 1s }] }
  - { id: b, apis: [A], scope: user, limits: [{ limit: 1, window: 1s }] }
`;

test('every command example in the README and the --help texts runs and does what it says', { timeout: 900_000 }, async (t) => {
  const examples = [...readmeExamples(await readFile(join(PROJECT_ROOT, 'README.md'), 'utf8')), ...helpExamples()];
  const dir = await mkdtemp(join(tmpdir(), 'quotaflow-examples-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'bin'));
  await writeFile(join(dir, 'bin', 'quotaflow'), `#!/usr/bin/env bash\nexec node ${join(PROJECT_ROOT, 'ops/bin/quotaflow.mjs')} "$@"\n`, { mode: 0o755 });
  await symlink(join(PROJECT_ROOT, 'policies'), join(dir, 'policies'));
  await symlink(join(PROJECT_ROOT, 'package.json'), join(dir, 'package.json'));
  await symlink(join(PROJECT_ROOT, 'ops'), join(dir, 'ops'));
  // `npm start` runs in the directory of package.json: the project's own files beside it.
  for (const name of ['node_modules', 'src', 'schemas']) await symlink(join(PROJECT_ROOT, name), join(dir, name));
  await writeFile(join(dir, 'broken.yaml'), BROKEN);
  const talkpilot = await readFile(join(PROJECT_ROOT, 'policies/talkpilot.yaml'), 'utf8');
  await writeFile(
    join(dir, 'halved.yaml'),
    talkpilot
      .replace('version: "1"', 'version: "halved"')
      .replace('limit: 60, window: 60s', 'limit: 30, window: 60s')
      .replace('limit: 1000, window: 1h', 'limit: 500, window: 1h')
      .replace('$schema: ../schemas/policy.schema.json', ''),
  );

  let hits = 0;
  const upstream = createServer((_req, res) => {
    hits++;
    res.end('ok');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => upstream.close(() => r())));

  const { brokers, redisUrl } = services();
  // Not testRedis(t): the clean-up below needs it after the hooks testRedis would add have run.
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 3 });
  const topicPrefix = `${uniqueName('examples')}.`;
  const keyPrefix = `${uniqueName('ex')}:`;
  const ctx: Ctx = {
    dir,
    brokers: brokers.join(','),
    redisUrl,
    env: {
      ...process.env,
      PATH: `${join(dir, 'bin')}:${process.env.PATH}`,
      KAFKA_BROKERS: brokers.join(','),
      REDIS_URL: redisUrl,
      QUOTAFLOW_TOPIC_PREFIX: topicPrefix,
      QUOTAFLOW_KEY_PREFIX: keyPrefix,
      QUOTAFLOW_LOG: 'info',
      QUOTAFLOW_LOG_FORMAT: 'json',
    },
    ports: { gateway: await freePort(), upstream: (upstream.address() as AddressInfo).port },
    upstreamHits: () => hits,
    inside: new Map(),
    loseRedis: async () => {
      const keys = await redis.keys(`${keyPrefix}*`);
      if (keys.length) await redis.del(...keys);
    },
  };
  t.after(async () => {
    try {
      const admin = testKafka(t).admin();
      await admin.connect();
      const mine = (await admin.listTopics()).filter((n) => n.startsWith(topicPrefix));
      if (mine.length) await admin.deleteTopics(mine).catch(() => {});
      await admin.disconnect();
      await ctx.loseRedis();
    } finally {
      await redis.quit().catch(() => redis.disconnect());
    }
  });

  const matches = (p: Entry, e: Example) => p.match.test(bare(e.command));
  const unplanned = examples.filter((e) => !PLAN.some((p) => matches(p, e)));
  assert.deepEqual(
    unplanned.map((e) => `${e.where}: ${e.command}`),
    [],
    'every example has an entry in the plan',
  );
  const unused = PLAN.filter((p) => !examples.some((e) => matches(p, e)));
  assert.deepEqual(
    unused.map((p) => String(p.match)),
    [],
    'every entry of the plan runs an example',
  );

  const done = new Set<Example>();
  for (const entry of PLAN.filter((p) => p.holds)) {
    const held = examples.filter((e) => matches(entry, e));
    assert.equal(held.length, 1, `${entry.holds} is one example`);
    ctx.inside.set(entry.holds!, held[0]!);
  }
  for (const entry of PLAN) {
    if (!entry.run) continue;
    for (const e of examples.filter((x) => matches(entry, x) && !done.has(x))) {
      done.add(e);
      const started = Date.now();
      await entry.run(e, ctx);
      t.diagnostic(`${((Date.now() - started) / 1000).toFixed(1)} s  ${e.where}: ${e.command.split('\n')[0]}`);
    }
  }
  const ran = new Set([...done, ...ctx.inside.values()]);
  assert.equal(ran.size, examples.length, 'every example ran');
});
