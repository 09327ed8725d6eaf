/**
 * End to end, for each of the six shipped policies: a client talks HTTP to a sidecar (a real Gateway
 * behind a real HTTP server), the gateway emits usage to Kafka, an in-process aggregator folds it in
 * Redis and publishes decisions, and every gateway follows them.
 *
 * (a) Scaled-down copies of the policies (60s → 3s, 1h → 12s, small limits; fixed windows stay fixed):
 *     up to the limit passes, the next request is refused with the product's exact status, body and
 *     headers, and passes again once the window rolls. A gateway refuses on its own count alone, so
 *     each test also has a second sidecar that saw none of the traffic refuse the same key the same
 *     way once the aggregator's block reaches it (the Kafka → aggregator → decisions → gateway path),
 *     and admit again after the roll. Where a rule has an hourly limit, spending it refuses requests
 *     with the hourly message while the minute still has room.
 * (b) The shipped files as they are: the request after each limit is refused exactly as the seed
 *     documents say, on the first sidecar and, through the decision, on the second.
 *
 * The expected messages and bodies below are copied from the seed documents, not derived from the
 * policy files. Nothing asserts on timing: waits poll with generous deadlines.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { configureLogging } from '../../src/log.ts';
import { compilePolicy, loadPolicyFile, type CompiledPolicy } from '../../src/policy/index.ts';
import { PROJECT_ROOT } from '../../src/stack/paths.ts';
import { aggregatorEnv, policyFromText, readUntil } from '../support/aggregator.ts';
import { services, uniqueName } from '../support/integration.ts';
import { eventsOf } from '../support/fleet.ts';
import { limitsCommand } from '../../src/cli/limits.ts';
import {
  parseIetf,
  rateLimitHeaders,
  scalePolicy,
  sendUntil,
  sleepUntil,
  startSidecarGateway,
  startTestAggregator,
  waitForBlock,
  type ClientRequest,
  type HttpReply,
  type SidecarGateway,
} from '../support/gateway.ts';

configureLogging({ level: 'warn' });

const POLICIES = join(PROJECT_ROOT, 'policies');

// The seeds' words.
/** Seed 001, "Minute-based Limit" (typographic ’). */
const KORE_MINUTE = 'You’ve exceeded the per-minute rate limit. Please wait for sometime before retrying.';
/** Seed 001, "Hour-based Limit". */
const KORE_HOUR = 'You’ve exceeded the hourly rate limit. Please wait for sometime before retrying.';
/** Seed 000 (Contact Center AI) prints the same sentence with a straight apostrophe. */
const CCAI_MINUTE = "You've exceeded the per-minute rate limit. Please wait for sometime before retrying.";
/** Seed 003 gives no body; the policy answers with the reason phrase of 429. */
const BOLNA_BODY = 'Too Many Requests';
/** Seed 004's error body, two-space indented as the seed prints it. */
const talkPilotBody = (seconds: number, requestId: string) => `{
  "error": {
    "code": "RATE_LIMITED",
    "message": "Rate limit exceeded. Try again in ${seconds} seconds.",
    "request_id": "${requestId}"
  }
}`;

// The scaled windows: 3 s (50 ms buckets) for a minute and 12 s (200 ms buckets) for an hour.
const MINUTE_MS = 3_000;
const HOUR_MS = 12_000;
const SCALED_WINDOWS = { '60s': '3s', '1h': '12s' };

const SUBJECTS = 'x-quotaflow-subjects';
const API = 'x-quotaflow-api';
const subjects = (s: Record<string, string>) => new URLSearchParams(s).toString();

// ---------------------------------------------------------------------------------------------
// What a refusal must look like, per product family

interface Window {
  /** Name in the IETF fields. */
  name: string;
  limit: number;
  seconds: number;
}

interface RefusalExpectation {
  /** The window whose limit refused the request. */
  blocking: Window;
  /** TalkPilot: the X-RateLimit-Reset values that are right (unix seconds). */
  reset?: number[];
  /** IETF policies: remaining per window name that must be reported exactly. */
  remaining?: Record<string, number>;
}

interface Family {
  refused(reply: HttpReply, e: RefusalExpectation, requestId: string): void;
  /** An admitted request, the `n`th (1-based) this gateway admitted for the key in the window. */
  admitted(reply: HttpReply, n: number, e: { window: Window; reset?: number[] }): void;
}

function retryAfter(reply: HttpReply, max: number): number {
  const text = reply.headers['retry-after'];
  assert.match(String(text), /^[1-9][0-9]*$/, 'Retry-After is a whole number of seconds, at least 1');
  const seconds = Number(text);
  assert.ok(seconds <= max, `Retry-After ${seconds} is within the ${max} s window`);
  return seconds;
}

/** Kore.ai and Bolna: the message as plain text, Retry-After and the IETF fields for every limit of the rule. */
function ietfFamily(message: string, windows: Window[]): Family {
  const policyField = windows.map((w) => `"${w.name}";q=${w.limit};w=${w.seconds}`).join(', ');
  return {
    refused(reply, e) {
      assert.equal(reply.status, 429, `refused with 429, got ${reply.status} ${reply.body}`);
      assert.equal(reply.body, message);
      assert.equal(reply.headers['content-type'], 'text/plain; charset=utf-8');
      assert.deepEqual(Object.keys(rateLimitHeaders(reply)).sort(), ['ratelimit', 'ratelimit-policy', 'retry-after']);
      const ra = retryAfter(reply, e.blocking.seconds);
      assert.equal(reply.headers['ratelimit-policy'], policyField);
      const state = parseIetf(reply.headers['ratelimit']);
      assert.deepEqual(
        state.map((s) => s.name),
        windows.map((w) => w.name),
      );
      for (const [i, s] of state.entries()) {
        if (s.name === e.blocking.name) {
          assert.equal(s.r, 0, `RateLimit: nothing left in the ${s.name} window`);
          assert.equal(s.t, ra, 'RateLimit t of the refusing window is the Retry-After');
        } else {
          assert.ok(s.t! >= 0 && s.t! <= windows[i]!.seconds, `RateLimit t=${s.t} of ${s.name} is within its window`);
          if (e.remaining?.[s.name] !== undefined) assert.equal(s.r, e.remaining[s.name], `RateLimit r of ${s.name}`);
        }
      }
    },
    admitted(reply, n, e) {
      assert.equal(reply.status, 200, `request ${n}: admitted, got ${reply.status} (${reply.check?.reason}) ${reply.body}`);
      assert.deepEqual(Object.keys(rateLimitHeaders(reply)).sort(), ['ratelimit', 'ratelimit-policy'], 'no Retry-After on an admitted request');
      assert.equal(reply.headers['ratelimit-policy'], policyField);
      const item = parseIetf(reply.headers['ratelimit']).find((s) => s.name === e.window.name);
      assert.equal(item?.r, e.window.limit - n, `RateLimit r of ${e.window.name} after ${n} admitted`);
    },
  };
}

/** TalkPilot (seed 004): the JSON error body, Retry-After and X-RateLimit-* for the minute, nothing else. */
function talkPilotFamily(minuteLimit: number): Family {
  return {
    refused(reply, e, requestId) {
      assert.equal(reply.status, 429, `refused with 429, got ${reply.status} ${reply.body}`);
      assert.equal(reply.headers['content-type'], 'application/json');
      assert.deepEqual(Object.keys(rateLimitHeaders(reply)).sort(), ['retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset']);
      const ra = retryAfter(reply, e.blocking.seconds);
      assert.equal(reply.body, talkPilotBody(ra, requestId));
      assert.equal(reply.headers['x-ratelimit-limit'], String(minuteLimit), 'X-RateLimit-Limit: maximum requests per minute');
      assert.equal(reply.headers['x-ratelimit-remaining'], '0');
      if (e.reset)
        assert.ok(
          e.reset.includes(Number(reply.headers['x-ratelimit-reset'])),
          `X-RateLimit-Reset ${reply.headers['x-ratelimit-reset']} is one of ${e.reset.join(', ')}`,
        );
    },
    admitted(reply, n, e) {
      assert.equal(reply.status, 200, `admitted, got ${reply.status} ${reply.body}`);
      assert.deepEqual(Object.keys(rateLimitHeaders(reply)).sort(), ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset']);
      assert.equal(reply.headers['x-ratelimit-limit'], String(minuteLimit));
      assert.equal(reply.headers['x-ratelimit-remaining'], String(minuteLimit - n));
      if (e.reset)
        assert.ok(
          e.reset.includes(Number(reply.headers['x-ratelimit-reset'])),
          `X-RateLimit-Reset ${reply.headers['x-ratelimit-reset']} is one of ${e.reset.join(', ')}`,
        );
    },
  };
}

/** The end of the fixed window of `windowMs` holding `t`, in unix seconds. */
const fixedEnd = (t: number, windowMs: number) => ((Math.floor(t / windowMs) + 1) * windowMs) / 1000;

// ---------------------------------------------------------------------------------------------
// The six products

interface Product {
  title: string;
  file: string;
  /** Scaled limit per `limit/window` of the file. */
  scaledLimits: Record<string, number>;
  /** The request a client sends for one counting key; `i` varies what leaves the key alone (a user of the same organization). */
  request(key: string, i: number): ClientRequest;
  /** Scaled limits of the rule the request resolves to, with the family of its refusals. */
  minute: number;
  hour?: number;
  fixed: boolean;
  family(scaled: { minute: Window; hour?: Window }): Family;
}

const kore =
  (api: string, subjectsOf: (key: string) => Record<string, string>) =>
  (key: string): ClientRequest => ({
    method: 'POST',
    path: '/',
    headers: { [API]: api, [SUBJECTS]: subjects(subjectsOf(key)) },
  });

const PRODUCTS: Product[] = [
  {
    title: 'Kore.ai Automation AI (bot level, 60/min + 1800/h)',
    file: 'kore-automation-ai.yaml',
    scaledLimits: { '60/60s': 5, '1800/1h': 8, '600/60s': 10, '18000/1h': 24 },
    request: kore('Bot Export', (key) => ({ account: `acc-${key}`, bot: key })),
    minute: 5,
    hour: 8,
    fixed: false,
    family: ({ minute, hour }) => ({
      // The message depends on the window: built per refusal below.
      refused: (reply, e, id) => ietfFamily(e.blocking.name === minute.name ? KORE_MINUTE : KORE_HOUR, [minute, hour!]).refused(reply, e, id),
      admitted: (reply, n, e) => ietfFamily(KORE_MINUTE, [minute, hour!]).admitted(reply, n, e),
    }),
  },
  {
    title: 'Kore.ai Contact Center AI (account level, 60/min)',
    file: 'kore-contact-center-ai.yaml',
    scaledLimits: { '60/60s': 5 },
    request: kore('Skills APIs', (key) => ({ account: key })),
    minute: 5,
    fixed: false,
    family: ({ minute }) => ietfFamily(CCAI_MINUTE, [minute]),
  },
  {
    title: 'Kore.ai Case Management (account level, 60/min)',
    file: 'kore-case-management.yaml',
    scaledLimits: { '60/60s': 5 },
    request: kore('Create Case', (key) => ({ account: key })),
    minute: 5,
    fixed: false,
    family: ({ minute }) => ietfFamily(KORE_MINUTE, [minute]),
  },
  {
    title: 'Kore.ai Quality AI (account level, 60/min)',
    file: 'kore-quality-ai.yaml',
    scaledLimits: { '60/60s': 5 },
    request: kore('Raw Data API', (key) => ({ account: key })),
    minute: 5,
    fixed: false,
    family: ({ minute }) => ietfFamily(KORE_MINUTE, [minute]),
  },
  {
    title: 'Bolna (per organization, 500/min on /v2/agent/{agent_id}/executions)',
    file: 'bolna.yaml',
    scaledLimits: { '500/60s': 5, '1000/60s': 10 },
    // Users of one organization share its counter.
    request: (key, i) => ({ path: '/v2/agent/agent-7/executions', headers: { [SUBJECTS]: subjects({ organization: key, user: `user-${i % 3}` }) } }),
    minute: 5,
    fixed: false,
    family: ({ minute }) => ietfFamily(BOLNA_BODY, [minute]),
  },
  {
    title: 'TalkPilot (per API key, fixed 60/min + 1000/h)',
    file: 'talkpilot.yaml',
    scaledLimits: { '60/60s': 5, '1000/1h': 8, '300/60s': 10, '10000/1h': 30 },
    request: (key, i) => ({ path: '/v1/agents', headers: { 'x-api-key': key, 'x-request-id': `req_${key}_${i}` } }),
    minute: 5,
    hour: 8,
    fixed: true,
    family: ({ minute }) => talkPilotFamily(minute.limit),
  },
];

const requestIdOf = (r: ClientRequest) => r.headers?.['x-request-id'] ?? '';

async function scaledPolicy(p: Product): Promise<CompiledPolicy> {
  const text = await readFile(join(POLICIES, p.file), 'utf8');
  const scaled = scalePolicy(text, {
    windows: SCALED_WINDOWS,
    limit: (limit, window) => {
      const to = p.scaledLimits[`${limit}/${window}`];
      if (to === undefined) throw new Error(`${p.file}: no scaled limit for ${limit}/${window}`);
      return to;
    },
  });
  return (await policyFromText(scaled)).policy;
}

/** A client's `i`th request for `key`, and a counter of requests sent. */
function client(p: Product, key: string) {
  let i = 0;
  return () => p.request(key, i++);
}

/**
 * Fills the minute through A; the next request is refused by A, then (once the aggregator's block has
 * reached it) by B; after the window rolls both admit again.
 */
async function minuteScenario(p: Product, a: SidecarGateway, b: SidecarGateway, family: Family, minute: Window, hour: Window | undefined): Promise<void> {
  const next = client(p, uniqueName('m'));
  const fixedReset = (from: number) => (p.fixed ? [fixedEnd(from, MINUTE_MS), fixedEnd(Date.now(), MINUTE_MS)] : undefined);
  const started = Date.now();
  for (let n = 1; n <= p.minute; n++) family.admitted(await a.send(next()), n, { window: minute, reset: fixedReset(started) });

  let req = next();
  const hourRoom = hour ? { [hour.name]: hour.limit - p.minute } : undefined;
  const byA = await a.send(req);
  family.refused(byA, { blocking: minute, reset: fixedReset(started), remaining: hourRoom }, requestIdOf(req));
  // A refuses on its own count (or on the block, had the decision already come back).
  assert.ok(byA.check?.reason === 'local-limit' || byA.check?.reason === 'blocked', `A refused on its own count or the block, not ${byA.check?.reason}`);
  const counterKey = byA.check.counterKey!;

  // B saw none of the traffic: only the aggregator's decision can make it refuse.
  const block = await waitForBlock(b.gateway, counterKey, { windowMs: MINUTE_MS });
  assert.equal(block.limit, p.minute);
  req = next();
  const byB = await b.send(req);
  family.refused(byB, { blocking: minute, reset: fixedReset(started) }, requestIdOf(req));
  assert.equal(byB.check?.reason, 'blocked', 'B refused on the decision it received');
  assert.equal(byB.check.counterKey, counterKey);
  assert.equal(b.results.filter((r) => r.counterKey === counterKey && r.allowed).length, 0, 'B admitted nothing for this key');

  // The window rolls: A keeps refusing (refusals consume nothing) until it admits, then B admits too.
  const replies = await sendUntil(a, next, (r) => r.status === 200, 15_000, 'A to admit again once the window rolled');
  for (const r of replies.slice(0, -1)) assert.equal(r.status, 429);
  assert.equal(replies.at(-1)!.check?.reason, 'admitted');
  const again = await b.send(next());
  family.admitted(again, 1, { window: minute });
  assert.equal(again.check?.reason, 'admitted');
}

/**
 * Spends the hour through A in two minutes (the minute's limit, then after the minute rolled the
 * rest): the next request is refused with the hourly message while the minute has room, by A and
 * then by B; both admit again when the hour rolls.
 */
async function hourScenario(p: Product, a: SidecarGateway, b: SidecarGateway, family: Family, minute: Window, hour: Window): Promise<void> {
  const next = client(p, uniqueName('h'));
  const hourStart = Date.now();
  for (let n = 1; n <= p.minute; n++) assert.equal((await a.send(next())).status, 200);
  const lastOfMinute = Date.now();
  let req = next();
  family.refused(await a.send(req), { blocking: minute }, requestIdOf(req));

  // Every request of the first minute has left the minute window (rolling: its last bucket; fixed: the boundary).
  await sleepUntil(p.fixed ? fixedEnd(lastOfMinute, MINUTE_MS) * 1000 + 20 : (Math.floor(lastOfMinute / 50) + 1) * 50 + MINUTE_MS + 20);
  const rest = p.hour! - p.minute;
  for (let n = 1; n <= rest; n++) assert.equal((await a.send(next())).status, 200);

  const reset = p.fixed ? [fixedEnd(hourStart, HOUR_MS), fixedEnd(Date.now(), HOUR_MS)] : undefined;
  // The minute still has room (rest < minute): the hour refuses, with its own message.
  assert.ok(rest < p.minute);
  req = next();
  const byA = await a.send(req);
  family.refused(byA, { blocking: hour, reset, remaining: { [minute.name]: p.minute - rest } }, requestIdOf(req));

  await waitForBlock(b.gateway, byA.check!.counterKey!, { windowMs: HOUR_MS });
  req = next();
  const byB = await b.send(req);
  family.refused(byB, { blocking: hour, reset }, requestIdOf(req));
  assert.equal(byB.check?.reason, 'blocked');

  const replies = await sendUntil(a, next, (r) => r.status === 200, 30_000, 'A to admit again once the hour rolled', 100);
  for (const r of replies.slice(0, -1)) assert.equal(r.status, 429);
  assert.equal((await b.send(next())).status, 200);
}

/** The env, aggregator and two sidecars of one policy; everything is stopped when `t` ends. */
async function stack(t: TestContext, policy: CompiledPolicy) {
  const env = await aggregatorEnv(t, 3);
  await startTestAggregator(env, policy);
  const [a, b] = await Promise.all([startSidecarGateway(env, policy, { gatewayId: 'gw-a' }), startSidecarGateway(env, policy, { gatewayId: 'gw-b' })]);
  return { env, a, b };
}

// ---------------------------------------------------------------------------------------------

describe('gateway end to end: sidecar → Kafka → aggregator → decisions → sidecar', { concurrency: true }, () => {
  describe('(a) scaled copies of the shipped policies: refused at the limit, by both gateways, and admitted again when the window rolls', {
    concurrency: true,
  }, () => {
    for (const p of PRODUCTS) {
      test(p.title, { timeout: 120_000, concurrency: true }, async (t) => {
        const policy = await scaledPolicy(p);
        const { a, b } = await stack(t, policy);
        const minute: Window = { name: '3s', limit: p.minute, seconds: MINUTE_MS / 1000 };
        const hour: Window | undefined = p.hour ? { name: '12s', limit: p.hour, seconds: HOUR_MS / 1000 } : undefined;
        const family = p.family({ minute, hour });
        // Fixed windows: start at a boundary of the longest, so each scenario stays inside its windows.
        if (p.fixed) await sleepUntil(Math.ceil(Date.now() / HOUR_MS) * HOUR_MS + 10);
        await Promise.all([
          t.test(`${minute.name} window: the request after ${p.minute} is refused by A, then by B through the decision; both admit once it rolls`, () =>
            minuteScenario(p, a, b, family, minute, hour),
          ),
          hour &&
            t.test(`${hour.name} window: once ${p.hour} are spent the request is refused with the hourly message while the minute has room`, () =>
              hourScenario(p, a, b, family, minute, hour),
            ),
        ]);
      });
    }
  });

  describe('(b) the shipped policy files, unscaled: the request after the limit is refused exactly as the seed says', { concurrency: true }, () => {
    const MINUTE: Window = { name: 'minute', limit: 60, seconds: 60 };
    const HOUR: Window = { name: 'hour', limit: 1800, seconds: 3600 };

    /** `limit` requests through A pass, the next is refused by A and, once the decision is there, by B. */
    async function firstRefusal(
      a: SidecarGateway,
      b: SidecarGateway,
      next: () => ClientRequest,
      limit: number,
      family: Family,
      e: RefusalExpectation & { window: Window },
    ) {
      for (let n = 1; n <= limit; n++) {
        const reply = await a.send(next());
        if (n === 1 || n === limit || reply.status !== 200) family.admitted(reply, n, { window: e.window, reset: e.reset });
      }
      let req = next();
      const byA = await a.send(req);
      family.refused(byA, e, requestIdOf(req));
      const counterKey = byA.check!.counterKey!;
      const block = await waitForBlock(b.gateway, counterKey, { windowMs: e.blocking.seconds * 1000 });
      assert.equal(block.limit, limit);
      req = next();
      const byB = await b.send(req);
      const { remaining: _ownCounts, ...onB } = e; // B's remaining estimates are its own (it admitted nothing)
      family.refused(byB, onB, requestIdOf(req));
      assert.equal(byB.check?.reason, 'blocked');
      return counterKey;
    }

    const real = async (file: string) => compilePolicy(await loadPolicyFile(join(POLICIES, file)));
    const koreClient = (api: string, s: Record<string, string>) => () => kore(api, () => s)('');

    test('Kore.ai Automation AI: the 61st request in a minute at bot, request_id and account level, the 601st at bot (notification) and account+table level', {
      timeout: 120_000,
    }, async (t) => {
      const { a, b } = await stack(t, await real('kore-automation-ai.yaml'));
      const key = uniqueName('r');
      const sixty = ietfFamily(KORE_MINUTE, [MINUTE, HOUR]);
      const sixHundred = ietfFamily(KORE_MINUTE, [
        { name: 'minute', limit: 600, seconds: 60 },
        { name: 'hour', limit: 18000, seconds: 3600 },
      ]);
      const bot = { account: `acc-${key}`, bot: `st-${key}` };
      await firstRefusal(a, b, koreClient('Bot Export', bot), 60, sixty, { window: MINUTE, blocking: MINUTE, remaining: { hour: 1740 } });
      // Each API has its own counter per bot: Publish Bot on the same bot still passes.
      assert.equal((await a.send(koreClient('Publish Bot', bot)())).status, 200);
      await firstRefusal(a, b, koreClient('Bot Export Status', { account: `acc-${key}`, request_id: `job-${key}` }), 60, sixty, {
        window: MINUTE,
        blocking: MINUTE,
        remaining: { hour: 1740 },
      });
      await firstRefusal(a, b, koreClient('Get Bots', { account: `acc-${key}` }), 60, sixty, { window: MINUTE, blocking: MINUTE, remaining: { hour: 1740 } });
      await firstRefusal(a, b, koreClient('Proactive Notification', bot), 600, sixHundred, {
        window: { name: 'minute', limit: 600, seconds: 60 },
        blocking: { name: 'minute', limit: 600, seconds: 60 },
        remaining: { hour: 17400 },
      });
      await firstRefusal(a, b, koreClient('Insert Data', { account: `acc-${key}`, table: 'orders' }), 600, sixHundred, {
        window: { name: 'minute', limit: 600, seconds: 60 },
        blocking: { name: 'minute', limit: 600, seconds: 60 },
        remaining: { hour: 17400 },
      });
      // account+table: another table of the same account has its own counter.
      assert.equal((await a.send(koreClient('Insert Data', { account: `acc-${key}`, table: 'customers' })())).status, 200);
    });

    test('Kore.ai Contact Center AI: the 61st request in a minute, on a named API group and on the other Contact Center APIs', {
      timeout: 120_000,
    }, async (t) => {
      const { a, b } = await stack(t, await real('kore-contact-center-ai.yaml'));
      const account = uniqueName('acc');
      const family = ietfFamily(CCAI_MINUTE, [MINUTE]);
      await firstRefusal(a, b, koreClient('Skills APIs', { account }), 60, family, { window: MINUTE, blocking: MINUTE });
      assert.equal((await a.send(koreClient('WFM APIs', { account })())).status, 200, 'each named group has its own counter');
      await firstRefusal(a, b, koreClient('Agent AI APIs', { account }), 60, family, { window: MINUTE, blocking: MINUTE });
    });

    test('Kore.ai Case Management: the 61st request in a minute', { timeout: 120_000 }, async (t) => {
      const { a, b } = await stack(t, await real('kore-case-management.yaml'));
      const account = uniqueName('acc');
      await firstRefusal(a, b, koreClient('Create Case', { account }), 60, ietfFamily(KORE_MINUTE, [MINUTE]), { window: MINUTE, blocking: MINUTE });
      assert.equal((await a.send(koreClient('Get Tasks', { account })())).status, 200, 'each API has its own counter');
    });

    test('Kore.ai Quality AI: the 61st request in a minute', { timeout: 120_000 }, async (t) => {
      const { a, b } = await stack(t, await real('kore-quality-ai.yaml'));
      const account = uniqueName('acc');
      await firstRefusal(a, b, koreClient('Auto QA Reporting API', { account }), 60, ietfFamily(KORE_MINUTE, [MINUTE]), { window: MINUTE, blocking: MINUTE });
    });

    test('Bolna: the 501st request in a minute on an endpoint (per organization), the 1001st on the other endpoints (per user outside an organization)', {
      timeout: 120_000,
    }, async (t) => {
      const { a, b } = await stack(t, await real('bolna.yaml'));
      const org = uniqueName('org');
      const endpoint: Window = { name: 'minute', limit: 500, seconds: 60 };
      let i = 0;
      const executions = () => ({ path: '/v2/agent/agent-1/executions', headers: { [SUBJECTS]: subjects({ organization: org, user: `user-${i++ % 4}` }) } });
      await firstRefusal(a, b, executions, 500, ietfFamily(BOLNA_BODY, [endpoint]), { window: endpoint, blocking: endpoint });
      // Each endpoint has its own 500.
      assert.equal((await a.send({ method: 'POST', path: '/call', headers: { [SUBJECTS]: subjects({ organization: org, user: 'user-0' }) } })).status, 200);
      const other: Window = { name: 'minute', limit: 1000, seconds: 60 };
      const user = uniqueName('user');
      const batches = () => ({ path: '/batches', headers: { [SUBJECTS]: subjects({ user }) } });
      await firstRefusal(a, b, batches, 1000, ietfFamily(BOLNA_BODY, [other]), { window: other, blocking: other });
    });

    test('TalkPilot: the 61st request in a fixed minute, the 301st for a key with custom limits, none for the unlimited key', {
      timeout: 120_000,
    }, async (t) => {
      const { a, b } = await stack(t, await real('talkpilot.yaml'));
      // All of it inside one calendar minute: start at the next minute when less than 20 s are left.
      if (Date.now() % 60_000 > 40_000) await sleepUntil(Math.ceil(Date.now() / 60_000) * 60_000 + 10);
      const reset = [fixedEnd(Date.now(), 60_000)];
      const apiKey = uniqueName('tp_live');
      let i = 0;
      const requests = (key: string) => () => ({ path: '/v1/calls', headers: { 'x-api-key': key, 'x-request-id': `req_${i++}` } });
      const counterKey = await firstRefusal(a, b, requests(apiKey), 60, talkPilotFamily(60), { window: MINUTE, blocking: MINUTE, reset });
      // The seed's X-RateLimit-Reset is a whole minute (1711108920): the fixed window's end.
      assert.equal(reset[0]! % 60, 0);
      assert.ok(counterKey.includes(apiKey));

      // "These defaults can be customized per API key": the policy's example key has 300/min.
      const high = { name: 'minute', limit: 300, seconds: 60 };
      await firstRefusal(a, b, requests('tp_live_example_high_volume'), 300, talkPilotFamily(300), { window: high, blocking: high, reset });
      for (let n = 0; n < 100; n++) {
        const reply = await a.send(requests('tp_live_example_internal')());
        assert.equal(reply.status, 200, 'the unlimited key is never refused');
      }
    });

    test('TalkPilot: a key at 60 of 60 raised to 120 by `limits set` counts down 59…0 and is admitted exactly 60 more times by one sidecar; lowered to 100 it is refused at once; a 429 without X-Request-Id carries a minted id in its body, its header and its usage event (issue #12)', {
      timeout: 120_000,
    }, async (t) => {
      const { env, a, b } = await stack(t, await real('talkpilot.yaml'));
      // All of it inside one calendar minute.
      if (Date.now() % 60_000 > 25_000) await sleepUntil(Math.ceil(Date.now() / 60_000) * 60_000 + 10);
      const apiKey = uniqueName('tp_live');
      const scopeKey = `rule=per-key:api_key=${apiKey}`;
      const next = () => ({ path: '/v1/calls', headers: { 'x-api-key': apiKey } });
      const remaining = (r: HttpReply) => Number(r.headers['x-ratelimit-remaining']);
      for (let n = 1; n <= 60; n++) assert.equal(remaining(await a.send(next())), 60 - n);

      // The 61st, with no request id of the client's: one is minted, in the seed's style.
      const refused = await a.send(next());
      assert.equal(refused.status, 429);
      const id = String(refused.headers['x-request-id']);
      assert.match(id, /^req_[a-z0-9]{16}$/);
      assert.equal(refused.body, talkPilotBody(Number(refused.headers['retry-after']), id));
      const usage = await readUntil(
        env.kafka,
        env.topics.usage,
        (records) => records.some((m) => m.value?.toString().includes(id)),
        30_000,
        `the usage event of ${id}`,
      );
      const event = eventsOf(JSON.parse(usage.find((m) => m.value?.toString().includes(id))!.value!.toString())).find((e) => e.requestId === id)!;
      assert.equal(event.requestId, id, 'the usage event carries the id the client was told');
      assert.equal(event.outcome.kind, 'refused');
      const counterKey = refused.check!.counterKey!;
      await waitForBlock(b.gateway, counterKey, { windowMs: 60_000 });

      // Raised to 120: A admits again once the override reaches it, counting on from the 60 it admitted.
      const io = { out: () => {}, err: () => {}, env: { KAFKA_BROKERS: services().brokers.join(',') }, signal: new AbortController().signal };
      const set = (limit: number) =>
        limitsCommand.run(
          [
            'set',
            '--topic-prefix',
            env.topicPrefix,
            '--key',
            scopeKey,
            '--kind',
            'fixed',
            '--limit',
            String(limit),
            '--window',
            '60s',
            '--limit',
            '1000',
            '--window',
            '1h',
          ],
          io,
        );
      assert.equal(await set(120), 0);
      const until = await sendUntil(a, next, (r) => r.status === 200, 20_000, 'A to admit under the raised limit');
      assert.ok(until.slice(0, -1).every((r) => r.status === 429));
      const seen = [remaining(until.at(-1)!)];
      for (;;) {
        const r = await a.send(next());
        if (r.status !== 200) {
          assert.equal(r.check?.reason, 'local-limit', `refused on A's own count, not ${r.check?.reason}`);
          break;
        }
        seen.push(remaining(r));
      }
      assert.deepEqual(
        seen,
        Array.from({ length: 60 }, (_, i) => 59 - i),
        'Remaining 59…0: exactly 60 more admitted, never 127',
      );
      assert.equal(
        a.results.filter((r) => r.counterKey === counterKey && r.allowed).length,
        120,
        'one sidecar seeing all the traffic admits 120 under a limit of 120',
      );

      // The aggregator counted through the override too: its block is at 120 of 120.
      const block = await waitForBlock(b.gateway, counterKey, { windowMs: 60_000 });
      assert.deepEqual([block.limit, block.observed], [120, 120]);
      assert.equal((await b.send(next())).check?.reason, 'blocked');

      // Lowered to 100 with 120 admitted: refused at once, on A and (the block holds) on B.
      assert.equal(await set(100), 0);
      await sleepUntil(Date.now() + 1_000);
      const lowered = await a.send(next());
      assert.equal(lowered.status, 429);
      assert.equal(lowered.headers['x-ratelimit-limit'], '100');
      assert.equal((await b.send(next())).status, 429);
    });
  });
});
