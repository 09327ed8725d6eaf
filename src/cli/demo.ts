/**
 * The main job a newcomer runs first (`npm start`): quotaflow end to end on live HTTP traffic.
 *
 * It brings up Kafka and Redis (src/stack: KAFKA_BROKERS / REDIS_URL, else testcontainers, else a
 * local stack stopped afterwards), creates the topics, and runs in this process an aggregator, a
 * sidecar gateway enforcing a seed policy (TalkPilot's: 60/min and 1000/h per API key) in front of a
 * stand-in API, and HTTP clients: several API keys below their limits and one script far over its
 * per-minute limit. A live view (redrawn each second on a terminal, a snapshot line every 5 s
 * elsewhere) shows events/s, consumer lag, admitted and refused requests, live blocks, refusals by
 * rule and overshoot. On Ctrl-C or after --duration it stops the traffic, waits for the aggregator
 * to count the last events, prints a summary per API key (`--json`: as data), and stops everything.
 *
 * This file is the command and the pipeline it starts, drives and stops; its parts are in demo/:
 * options, the traffic plan, the traffic itself, what it observes, the live view and the summary.
 */
import { randomBytes } from 'node:crypto';
import { relative } from 'node:path';
import { EXIT, untilAborted, type CommandIO } from './command.ts';
import { defineCommand } from './define.ts';
import { clip, count, liveView } from './ui.ts';
import { resolveStack, type Stack } from '../stack/index.ts';
import { kafkaPort } from '../kafka/client.ts';
import type { Admin } from '../kafka/port.ts';
import { ensureTopics, groupNames, topicNames, topicSpecs, type TopicNames } from '../kafka/topics.ts';
import { compilePolicy, loadPolicyFile, type CompiledPolicy } from '../policy/index.ts';
import { Aggregator } from '../aggregator/aggregator.ts';
import { openUsageStore } from '../store/index.ts';
import { Gateway } from '../gateway/gateway.ts';
import { startSidecar } from '../gateway/sidecar.ts';
import { logger } from '../log.ts';
import { DEMO_OPTIONS, demoOptions, type DemoOptions } from './demo/options.ts';
import { identityOf, planTraffic, type Identity, type TenantPlan } from './demo/plan.ts';
import { Traffic, startUpstream } from './demo/traffic.ts';
import { LagGauge, Observer, consumerLag } from './demo/observe.ts';
import { Rates, frame, holdLogs, perSecText, snapshotLine, viewStream, type HeldLogs, type LiveState } from './demo/view.ts';
import { limitsHit, nextSteps, summaryText, type DemoSummary } from './demo/summary.ts';

export const demoCommand = defineCommand({
  name: 'demo',
  summary: 'the main job: live traffic through a sidecar and an aggregator, with blocks, refusals and overshoot',
  usage: ['quotaflow demo [--duration D] [--policy FILE] [--json] [options]'],
  description: `Runs quotaflow end to end on live HTTP traffic, on real services: Kafka and Redis from KAFKA_BROKERS /
REDIS_URL, or testcontainers, or a local stack started for the run (and stopped after it). In this
process it starts an aggregator, a sidecar gateway enforcing the policy in front of a stand-in API,
and clients: a bulk key (the policy's unlimited one), keys at 90%, 60% and 30% of their limits, one
with custom limits, and "runaway", a script far over its per-minute limit that gets blocked within
seconds, unblocked when the window has room and blocked again.

A live view shows usage events/s the aggregator consumes, its consumer lag, requests/s admitted and
refused, live blocks (key, rule, window, until), refusals by rule and overshoot; on a terminal it is
redrawn each second (logs below warn are held back meanwhile), elsewhere a snapshot line is printed
every 5 s. Ctrl-C (or --duration) stops the traffic, waits for the aggregator to count the last
events and prints a summary per API key: sent, admitted, refused, the limit it hit; then stops
everything the demo started. A second Ctrl-C quits at once (services started here go with it).

The last two examples run from another terminal while the demo runs, against a stack kept up by
\`quotaflow stack up\` (with its exports).`,
  options: DEMO_OPTIONS,
  examples: [
    'npm start                                  # the same as: quotaflow demo',
    'quotaflow demo --duration 90s',
    "quotaflow demo --duration 60 --json | jq '.tenants[] | {key, sent, refused, limitsHit}'",
    'quotaflow demo --policy policies/bolna.yaml --duration 2m',
    "quotaflow limits set --key rule=per-key:api_key=runaway --limit 720 --window 60s   # lifts runaway's block at once",
    'quotaflow audit --tenant api_key=runaway                                          # its breaches: refused, overshoot',
  ],
  exitCodes: {
    0: 'done (after --duration or Ctrl-C)',
    1: 'the policy is invalid, or the aggregator stopped on an error Kafka will not retry',
    2: "bad usage, or a policy the demo's traffic cannot run under",
    3: 'Kafka or Redis unreachable, or a prerequisite of the local stack missing',
    130: 'a second Ctrl-C: quit at once',
  },
  async run({ values, io }) {
    const opts = demoOptions(values, io.env);
    const policy = compilePolicy(await loadPolicyFile(opts.policyFile));
    const identity = identityOf(policy);
    const plan = planTraffic(policy, identity); // before any service starts: a policy it cannot drive fails fast
    const policyLabel = relative(process.cwd(), opts.policyFile) || opts.policyFile;
    const say = opts.json ? io.err : io.out;

    say(`quotaflow demo — the ${product(policy)} policy (${policyLabel}) on live HTTP traffic. Bringing up Kafka and Redis…`);
    const stack = await resolveStack({ env: io.env });
    const started = new Started();
    let held: HeldLogs | undefined;
    try {
      say(
        `  Kafka${stack.kafka.version ? ` ${stack.kafka.version}` : ''} (${stack.kafka.source}) at ${stack.brokers.join(',')} · Redis${stack.redis.version ? ` ${stack.redis.version}` : ''} (${stack.redis.source}) at ${stack.redisUrl}`,
      );
      const p = await startPipeline(stack, policy, identity, opts, started, say);
      if (io.signal.aborted) return EXIT.OK;
      const total = plan.reduce((a, t) => a + t.ratePerSec, 0);
      const runaway = plan.find((t) => t.overLimit)!;
      say(
        `  traffic  ${plan.length} tenants (${identity.subject}), ${perSecText(total)} in all; "${runaway.key}" sends ${perSecText(runaway.ratePerSec)} against ${runaway.limits}\n`,
      );

      const traffic = new Traffic(plan, new URL(p.sidecarUrl), identity, policy.refusal.status);
      started.add(() => traffic.stop());
      const lag = new LagGauge(p.admin, p.group, p.topics.usage);
      held = viewStream(opts).isTTY && process.stderr.isTTY ? holdLogs(io) : undefined;
      const run = await drive(p, plan, traffic, lag, opts, io, `quotaflow demo · ${product(policy)} policy`, held);
      const summary = summarize(p, plan, traffic, lag, run, {
        policy: policyLabel,
        product: product(policy),
        keyPrefix: opts.keyPrefix,
        refusalStatus: policy.refusal.status,
        tenantSubject: identity.subject,
      });
      if (opts.json) io.out(JSON.stringify(summary, null, 2));
      else io.out(`\n${summaryText(summary, nextSteps(stack, opts, runaway))}`);
      if (run.fatal !== undefined) {
        io.err(
          `quotaflow demo: the aggregator stopped on an error Kafka will not retry: ${run.fatal instanceof Error ? run.fatal.message : String(run.fatal)}\n  → see the log above; check that Kafka is healthy and run the demo again`,
        );
        return EXIT.FAILURE;
      }
      await started.stopAll();
      if (opts.keep && !io.signal.aborted) await keepStack(stack, say, io.signal);
      return EXIT.OK;
    } finally {
      await started.stopAll();
      await stack.stop();
      held?.restore();
      say('Stopped everything the demo started.');
    }
  },
});

const product = (policy: CompiledPolicy) => clip(policy.product, 40);

async function keepStack(stack: Stack, say: (t: string) => void, signal: AbortSignal): Promise<void> {
  say(`\nThe stack stays up until Ctrl-C:\n  export KAFKA_BROKERS=${stack.brokers.join(',')}\n  export REDIS_URL=${stack.redisUrl}`);
  await untilAborted(signal);
}

// ─── Running it ─────────────────────────────────────────────────────────────────────────────────

/** What the demo started, stopped last-started first. Each stop runs once, also when called early. */
class Started {
  private readonly stops: Array<() => Promise<void>> = [];
  add(stop: () => Promise<unknown>): () => Promise<void> {
    let done: Promise<void> | undefined;
    const once = () =>
      (done ??= stop().then(
        () => undefined,
        (e) => logger('demo').warn('stopping part of the demo failed', { error: e }),
      ));
    this.stops.push(once);
    return once;
  }
  async stopAll(): Promise<void> {
    for (const stop of [...this.stops].reverse()) await stop();
  }
}

interface Pipeline {
  admin: Admin;
  topics: TopicNames;
  group: string;
  aggregator: Aggregator;
  gateway: Gateway;
  sidecarUrl: string;
  /** Stops accepting requests, then sends the events still buffered (both run once). */
  closeSidecar(): Promise<void>;
  stopGateway(): Promise<void>;
  stopAggregator(): Promise<void>;
  observer: Observer;
  /** Events in the usage topic the group had not committed when the aggregator started. */
  backlog: number;
  /** The subject tenants are keyed by. */
  subject: string;
}

async function startPipeline(
  stack: Stack,
  policy: CompiledPolicy,
  identity: Identity,
  opts: DemoOptions,
  started: Started,
  say: (t: string) => void,
): Promise<Pipeline> {
  const runId = randomBytes(3).toString('hex');
  const settings = { brokers: stack.brokers, clientId: `quotaflow-demo-${runId}`, client: opts.kafkaClient };
  const kafka = kafkaPort(settings);
  const admin = kafka.admin();
  await admin.connect();
  started.add(() => admin.disconnect());
  const topics = topicNames(opts.topicPrefix);
  const created = await ensureTopics(admin, topicSpecs(topics));
  say(
    `  topics  ${Object.values(topics).join(', ')} — ${opts.topicPrefix ? `prefix "${opts.topicPrefix}"` : 'the standard names'}${created.length ? `, created ${created.length}` : ', already there'}`,
  );

  const group = groupNames(opts.topicPrefix).demo;
  const backlog = await retrying(() => consumerLag(admin, group, topics.usage), 10_000);
  const store = await openUsageStore(stack.redisUrl, { keyPrefix: opts.keyPrefix });
  started.add(() => store.close());
  const observer = new Observer();
  const aggregator = new Aggregator({ kafka, store, policy, topics, groupId: group, region: 'local' });
  aggregator.on('decision', observer.onDecision).on('breach', observer.onBreach);
  const assigned = new Promise<void>((r) => aggregator.once('assigned', () => r()));
  const stopAggregator = started.add(() => aggregator.stop());
  await aggregator.start();
  say(
    `  aggregator  consumer group ${group} on ${topics.usage}${backlog ? ` (${count(backlog)} events from before this run to catch up on)` : ''}; Redis keys ${opts.keyPrefix}*`,
  );

  const upstream = await startUpstream();
  started.add(() => upstream.close());
  const gateway = new Gateway({ policy, kafka: settings, topicPrefix: opts.topicPrefix, region: 'local', gatewayId: `demo-${runId}` });
  gateway.start();
  const stopGateway = started.add(() => gateway.stop());
  const sidecar = await startSidecar({
    gateway,
    host: '127.0.0.1',
    port: 0,
    upstream: upstream.url,
    log: logger('gateway'),
    checkHeaders: identity.viaSubjectsHeader,
    onResult: observer.onResult,
  });
  const closeSidecar = started.add(() => sidecar.close());
  say(`  sidecar  ${sidecar.url} → the API (an in-process stand-in) at ${upstream.url}`);

  await Promise.all([
    gateway.whenWarm(30_000).catch(() => say("  (the sidecar's decision cache is not warm yet; it enforces its own counts meanwhile)")),
    withTimeout(assigned, 30_000).catch(() => say('  (the aggregator has not joined its group yet; events wait in Kafka meanwhile)')),
  ]);
  return {
    admin,
    topics,
    group,
    aggregator,
    gateway,
    sidecarUrl: sidecar.url,
    closeSidecar,
    stopGateway,
    stopAggregator,
    observer,
    backlog,
    subject: identity.subject,
  };
}

/** A new topic's leaders may answer "not the leader" for a moment after its metadata says they exist. */
async function retrying<T>(call: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await call();
    } catch (e) {
      if (Date.now() > deadline || (e as { retriable?: unknown }).retriable === false) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

interface RunResult {
  stoppedBy: DemoSummary['stoppedBy'];
  trafficMs: number;
  fatal?: unknown;
}

interface StopWhen {
  signal: AbortSignal;
  /** Why it stopped: Ctrl-C unless the duration ran out or the aggregator failed. */
  why: Pick<RunResult, 'stoppedBy' | 'fatal'>;
  dispose(): void;
}

/** Aborts on Ctrl-C, when --duration is up, or when the aggregator stops on an error it cannot retry. */
function stopWhen(io: CommandIO, durationMs: number | undefined, aggregator: Aggregator): StopWhen {
  const stop = new AbortController();
  const why: StopWhen['why'] = { stoppedBy: 'ctrl-c' };
  const onAbort = () => stop.abort();
  const onFatal = (e: unknown) => {
    Object.assign(why, { stoppedBy: 'error', fatal: e });
    stop.abort();
  };
  io.signal.addEventListener('abort', onAbort, { once: true });
  aggregator.once('fatal', onFatal);
  const timer =
    durationMs === undefined
      ? undefined
      : setTimeout(() => {
          why.stoppedBy = 'duration';
          stop.abort();
        }, durationMs);
  if (io.signal.aborted) stop.abort();
  return {
    signal: stop.signal,
    why,
    dispose() {
      clearTimeout(timer);
      io.signal.removeEventListener('abort', onAbort);
      aggregator.off('fatal', onFatal);
    },
  };
}

/** Drives the traffic and the live view until Ctrl-C, --duration or an aggregator that cannot go on; then drains. */
async function drive(
  p: Pipeline,
  plan: TenantPlan[],
  traffic: Traffic,
  lag: LagGauge,
  opts: DemoOptions,
  io: CommandIO,
  title: string,
  held: HeldLogs | undefined,
): Promise<RunResult> {
  const stop = stopWhen(io, opts.durationMs, p.aggregator);
  const view = viewStream(opts).isTTY ? liveView(viewStream(opts)) : undefined;
  const rates = new Rates();
  const t0 = Date.now();
  let lastLine = t0;
  const tick = () => {
    lag.poll();
    const s = liveState(p, plan, traffic, lag, rates, Date.now() - t0, opts.durationMs, held?.warnings ?? []);
    if (view) view.draw(frame(s, title));
    else if (Date.now() - lastLine >= 5_000) {
      lastLine = Date.now();
      (opts.json ? io.err : io.out)(snapshotLine(s));
    }
  };
  traffic.start();
  const ticker = setInterval(tick, 1_000);
  try {
    await untilAborted(stop.signal);
  } finally {
    clearInterval(ticker);
    stop.dispose();
    view?.clear();
  }
  const result: RunResult = { ...stop.why, trafficMs: Date.now() - t0 };
  try {
    (opts.json ? io.err : io.out)(
      'stopping: traffic off; waiting for the last answers and for the aggregator to count the last events… (Ctrl-C again quits at once)',
    );
    await traffic.stop();
    await drain(p, lag);
  } finally {
    held?.release();
  }
  return result;
}

function liveState(
  p: Pipeline,
  plan: TenantPlan[],
  traffic: Traffic,
  lag: LagGauge,
  rates: Rates,
  elapsedMs: number,
  durationMs: number | undefined,
  warnings: string[],
): LiveState {
  const totals = traffic.totals();
  const events = p.aggregator.stats.committed;
  return {
    subject: p.subject,
    elapsedMs,
    durationMs,
    totals,
    events,
    lag: lag.value,
    warnings,
    perSec: rates.push({ at: Date.now(), events: p.aggregator.stats.events, sent: totals.sent, admitted: totals.admitted, refused: totals.refused }),
    cachedBlocks: p.gateway.cache.live(Date.now()).length,
    blocks: p.observer.liveBlocks(Date.now()),
    refusals: p.observer.refusals,
    overshoot: p.observer.overshoot,
    breaches: p.observer.breachCount,
    tenants: plan.map((t) => ({ ...t, ...traffic.counts.get(t.key)! })),
  };
}

/**
 * Closes the sidecar, lets the gateway send its last events, and waits (up to 20 s) until the
 * aggregator has committed everything in the usage topic, so the summary's counts are final. The
 * gateway and the aggregator then stop side by side (each waits out a Kafka fetch in flight).
 */
async function drain(p: Pipeline, lag: LagGauge): Promise<void> {
  await p.closeSidecar();
  const gatewayStopped = p.stopGateway(); // sends what is buffered first
  await until(async () => (p.gateway.emitter?.buffered ?? 0) === 0, 10_000);
  await until(async () => (lag.value = await consumerLag(p.admin, p.group, p.topics.usage).catch(() => undefined)) === 0, 20_000);
  await Promise.all([gatewayStopped, p.stopAggregator()]);
}

/** Polls `done` every 100 ms until it holds or `timeoutMs` has passed. */
async function until(done: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
}

function summarize(
  p: Pipeline,
  plan: TenantPlan[],
  traffic: Traffic,
  lag: LagGauge,
  run: RunResult,
  about: Pick<DemoSummary, 'policy' | 'product' | 'keyPrefix' | 'refusalStatus' | 'tenantSubject'>,
): DemoSummary {
  const refusalsByRule: DemoSummary['refusalsByRule'] = {};
  for (const [rule, m] of p.observer.refusals) refusalsByRule[rule] = Object.fromEntries(m);
  return {
    ...about,
    trafficMs: run.trafficMs,
    stoppedBy: run.stoppedBy,
    topics: p.topics,
    group: p.group,
    tenants: plan.map((t) => ({
      key: t.key,
      tenant: t.tenantKey,
      role: t.role,
      limits: t.limits,
      ratePerSec: Math.round(t.ratePerSec * 1_000) / 1_000,
      overLimit: t.overLimit,
      ...traffic.counts.get(t.key)!,
      ...limitsHit(p.observer, t.tenantKey),
    })),
    requests: traffic.totals(),
    events: {
      produced: p.gateway.emitter?.stats.sent ?? 0,
      dropped: p.gateway.emitter?.stats.dropped ?? 0,
      consumed: p.aggregator.stats.committedRequests,
      fromBeforeRun: p.backlog,
      lagAtEnd: lag.value ?? null,
    },
    blocks: {
      published: p.observer.published.blocks,
      moved: p.observer.published.moved,
      unblocks: p.observer.published.unblocks,
      nearSnapshots: p.observer.published.near,
    },
    refusalsByRule,
    overshoot: p.observer.overshoot,
    breaches: p.observer.breachCount,
  };
}
