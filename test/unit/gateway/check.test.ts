/**
 * Gateway.check without Kafka: the gateway's own count, cached block decisions, and the bodies and
 * headers of the seed documents, under an injected clock.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { compileOverride, compilePolicy, parsePolicyText } from '../../../src/policy/index.ts';
import { Gateway, type CheckRequest, type CheckResult } from '../../../src/gateway/gateway.ts';
import { loadShipped, mustResolve, seedText } from '../fixtures/simulate.ts';
import { decision, TestClock } from './fixtures.ts';

const talkpilot = loadShipped('talkpilot.yaml');
const kore = loadShipped('kore-automation-ai.yaml');
const seed004 = seedText('004_0a66da9ad9370d50.txt');
const seed001 = seedText('001_a20a4f11be1f3498.txt');

/** 1711108860: a whole minute, 60 s before the seed's X-RateLimit-Reset of 1711108920. */
const MINUTE = 1_711_108_860_000;
const HOUR = 1_711_108_800_000; // the whole hour holding MINUTE
const SEED_RESET = 1_711_108_920;

const key = (apiKey: string, requestId?: string): CheckRequest => ({
  method: 'GET',
  path: '/agents',
  headers: { 'x-api-key': apiKey },
  ...(requestId ? { requestId } : {}),
});
const gatewayAt = (t: number, policy = talkpilot) => {
  const clock = new TestClock(t);
  return { clock, gateway: new Gateway({ policy, clock: clock.read, gatewayId: 'test-gw' }) };
};
const headerLines = (r: CheckResult) =>
  Object.entries(r.headers)
    .map(([k, v]) => `${k}: ${v}`)
    .join('\n');

const SEED_BODY = [
  '{',
  '  "error": {',
  '    "code": "RATE_LIMITED",',
  '    "message": "Rate limit exceeded. Try again in 18 seconds.",',
  '    "request_id": "req_abc123"',
  '  }',
  '}',
].join('\n');
const SEED_429_HEADERS = 'Retry-After: 18\nX-RateLimit-Limit: 60\nX-RateLimit-Remaining: 0\nX-RateLimit-Reset: 1711108920';
/** A request id the gateway minted, in the seed's style ("req_abc123"): the policy's prefix and 16 lowercase letters and digits. */
const MINTED = /^req_[a-z0-9]{16}$/;

describe('TalkPilot (seed 004) through Gateway.check', () => {
  test("60 a minute admitted with the headers counting down; the 61st is the seed's 429; the next minute admits again", () => {
    const { clock, gateway } = gatewayAt(MINUTE);
    assert.equal(gateway.warm, true, 'without Kafka the gateway is always warm');
    for (let i = 1; i <= 60; i++) {
      clock.set(MINUTE + (i - 1) * 300); // one every 300 ms: the 60th at +17.7 s
      const r = gateway.check(key('tp_live_a'));
      assert.equal(r.allowed, true, `request ${i}`);
      assert.equal(r.reason, 'admitted');
      assert.equal(r.status, 200);
      assert.deepEqual(
        r.headers,
        { 'X-RateLimit-Limit': '60', 'X-RateLimit-Remaining': String(60 - i), 'X-RateLimit-Reset': String(SEED_RESET) },
        `request ${i}`,
      );
      if (i === 18) {
        assert.equal(headerLines(r), 'X-RateLimit-Limit: 60\nX-RateLimit-Remaining: 42\nX-RateLimit-Reset: 1711108920', "the seed's example response headers");
        assert.ok(seed004.includes(headerLines(r)));
      }
    }

    clock.set(MINUTE + 42_000); // 18 s before the minute resets, as in the seed
    const refused = gateway.check(key('tp_live_a', 'req_abc123'));
    assert.equal(refused.allowed, false);
    assert.equal(refused.reason, 'local-limit', "refused by the gateway's own count, no decision needed");
    assert.equal(refused.status, 429);
    assert.equal(refused.contentType, 'application/json');
    assert.equal(refused.retryAfterSeconds, 18);
    assert.equal(refused.message, 'Rate limit exceeded. Try again in 18 seconds.');
    assert.equal(refused.body, SEED_BODY);
    assert.equal(headerLines(refused), `${SEED_429_HEADERS}\nX-Request-Id: req_abc123`, "the seed's headers in its order, then the request id (issue #12)");
    assert.equal(refused.requestId, 'req_abc123', "the client's own id is kept");
    assert.equal(refused.rule, 'per-key');
    assert.equal(refused.counterKey, mustResolve(talkpilot, key('tp_live_a')).counterKey);
    assert.ok(seed004.includes(`HTTP/1.1 429 Too Many Requests\n${SEED_429_HEADERS}\n`));
    assert.ok(seed004.includes(`\`\`\`json theme={null}\n${SEED_BODY}\n\`\`\``));

    clock.set(MINUTE + 59_999);
    const stillRefused = gateway.check(key('tp_live_a'));
    assert.equal(stillRefused.reason, 'local-limit');
    assert.equal(stillRefused.headers['Retry-After'], '1', 'rounded up, never 0');
    // No id from the client: the gateway mints one, as the seed's body always has one (issue #12).
    assert.match(stillRefused.requestId ?? '', MINTED);
    assert.equal(JSON.parse(stillRefused.body!).error.request_id, stillRefused.requestId, 'in the body');
    assert.equal(stillRefused.headers['X-Request-Id'], stillRefused.requestId, 'and in X-Request-Id');
    assert.notEqual(gateway.check(key('tp_live_a')).requestId, stillRefused.requestId, 'a new id per request');
    assert.equal(gateway.check(key('tp_live_b')).allowed, true, 'another key has its own count');

    clock.set(MINUTE + 60_000);
    const next = gateway.check(key('tp_live_a'));
    assert.equal(next.allowed, true, 'the minute rolled over');
    assert.deepEqual(next.headers, { 'X-RateLimit-Limit': '60', 'X-RateLimit-Remaining': '59', 'X-RateLimit-Reset': String(SEED_RESET + 60) });
    assert.deepEqual(gateway.stats, { checks: 65, admitted: 62, refused: 3, unresolved: 0 });
  });

  test('refused requests consume no quota', () => {
    const { clock, gateway } = gatewayAt(MINUTE);
    for (let i = 0; i < 60; i++) gateway.check(key('k'));
    for (let i = 0; i < 100; i++) assert.equal(gateway.check(key('k')).allowed, false);
    clock.set(MINUTE + 60_000);
    for (let i = 0; i < 60; i++) assert.equal(gateway.check(key('k')).allowed, true, `request ${i + 1} of the next minute`);
    assert.equal(gateway.check(key('k')).allowed, false);
  });

  test('the hour: 1000 admitted across minutes, then refused until the hour resets, with Retry-After and X-RateLimit-Reset of the hour', () => {
    const { clock, gateway } = gatewayAt(HOUR);
    for (let i = 0; i < 1000; i++) {
      clock.set(HOUR + Math.floor(i / 60) * 60_000 + (i % 60) * 100);
      assert.equal(gateway.check(key('hourly')).allowed, true, `request ${i + 1}`);
    }
    clock.set(HOUR + 16 * 60_000 + 30_000); // minute 16 holds only 40: the hour refuses
    const r = gateway.check(key('hourly'));
    assert.equal(r.reason, 'local-limit');
    const secondsLeft = (3_600_000 - 16 * 60_000 - 30_000) / 1000;
    assert.equal(r.message, `Rate limit exceeded. Try again in ${secondsLeft} seconds.`);
    assert.match(r.requestId ?? '', MINTED);
    assert.deepEqual(r.headers, {
      'Retry-After': String(secondsLeft),
      'X-RateLimit-Limit': '60',
      'X-RateLimit-Remaining': '0',
      'X-RateLimit-Reset': String((HOUR + 3_600_000) / 1000),
      'X-Request-Id': r.requestId,
    });
    clock.set(HOUR + 3_600_000 - 1);
    assert.equal(gateway.check(key('hourly')).allowed, false);
    clock.set(HOUR + 3_600_000);
    assert.equal(gateway.check(key('hourly')).allowed, true);
  });

  test("a cached block on a key this gateway never saw refuses it until the decision's until", () => {
    const { clock, gateway } = gatewayAt(MINUTE + 10_000);
    const counterKey = mustResolve(talkpilot, key('seen_elsewhere')).counterKey;
    const until = MINUTE + 35_500; // 25.5 s from now
    assert.equal(gateway.cache.apply(decision({ counterKey, until, observed: 75 }), clock.now), true);

    const r = gateway.check(key('seen_elsewhere', 'req_1'));
    assert.equal(r.allowed, false);
    assert.equal(r.reason, 'blocked');
    assert.equal(r.status, 429);
    assert.equal(r.retryAfterSeconds, 26, '25.5 s rounded up');
    assert.equal(r.headers['Retry-After'], '26');
    assert.equal(r.headers['X-RateLimit-Remaining'], '0');
    assert.equal(r.headers['X-RateLimit-Reset'], String(Math.ceil(until / 1000)));
    assert.equal(r.body, SEED_BODY.replace('18 seconds', '26 seconds').replace('req_abc123', 'req_1'));
    assert.equal(gateway.check(key('someone_else')).allowed, true, 'a block is per counter');

    clock.set(until - 1);
    assert.equal(gateway.check(key('seen_elsewhere')).reason, 'blocked');
    assert.equal(gateway.check(key('seen_elsewhere')).headers['Retry-After'], '1');
    clock.set(until);
    const after = gateway.check(key('seen_elsewhere'));
    assert.equal(after.allowed, true, 'the block expires at until with no unblock');
    assert.equal(after.reason, 'admitted');
    assert.equal(after.headers['X-RateLimit-Remaining'], '59', 'the blocked requests were not counted');
  });

  test('a block on the hour window: Retry-After and X-RateLimit-Reset follow it, not the minute', () => {
    const { clock, gateway } = gatewayAt(MINUTE);
    const counterKey = mustResolve(talkpilot, key('hour_blocked')).counterKey;
    const until = HOUR + 3_600_000;
    gateway.cache.apply(decision({ counterKey, until, window: '1h', windowMs: 3_600_000, limit: 1000, observed: 1000 }), clock.now);
    const r = gateway.check(key('hour_blocked'));
    const seconds = (until - MINUTE) / 1000;
    assert.equal(r.reason, 'blocked');
    assert.equal(r.message, `Rate limit exceeded. Try again in ${seconds} seconds.`);
    assert.deepEqual(r.headers, {
      'Retry-After': String(seconds),
      'X-RateLimit-Limit': '60',
      'X-RateLimit-Remaining': '0',
      'X-RateLimit-Reset': String(until / 1000),
      'X-Request-Id': r.requestId,
    });
  });

  test('an unblock lifts a cached block before its until', () => {
    const { clock, gateway } = gatewayAt(MINUTE);
    const counterKey = mustResolve(talkpilot, key('lifted')).counterKey;
    gateway.cache.apply(decision({ counterKey, until: MINUTE + 60_000 }), clock.now);
    assert.equal(gateway.check(key('lifted')).reason, 'blocked');
    clock.advance(1_000);
    gateway.cache.apply(decision({ counterKey, until: clock.now, state: 'unblock' }), clock.now);
    assert.equal(gateway.check(key('lifted')).reason, 'admitted');
  });

  test("a request with no API key is refused with the policy's 401, saying why (issue #12)", () => {
    const { gateway } = gatewayAt(MINUTE);
    const r = gateway.check({ method: 'GET', path: '/agents', headers: {} });
    assert.match(r.requestId ?? '', MINTED);
    assert.deepEqual(r, {
      allowed: false,
      status: 401,
      headers: { 'X-Request-Id': r.requestId },
      reason: 'unidentified',
      detail: 'missing subject api_key (rule "per-key")',
      rule: 'per-key',
      api: null,
      requestId: r.requestId,
      message: 'Missing API key: send it in the X-API-Key header.',
      contentType: 'application/json',
      body: JSON.stringify({ error: { code: 'UNAUTHORIZED', message: 'Missing API key: send it in the X-API-Key header.', request_id: r.requestId } }, null, 2),
    });
    assert.deepEqual(gateway.stats, { checks: 1, admitted: 0, refused: 1, unresolved: 0 });
    assert.equal(
      gateway.check({ method: 'GET', path: '/agents', headers: { authorization: 'Bearer tp_live_1' } }).status,
      401,
      "a bearer token is not TalkPilot's key header",
    );
  });

  test('unlimited keys get the headers too, reporting a quota they never run short of (issue #12)', () => {
    const { clock, gateway } = gatewayAt(MINUTE + 5_000);
    const r = gateway.check(key('tp_live_example_internal'));
    assert.equal(r.reason, 'unlimited');
    assert.deepEqual(r.headers, { 'X-RateLimit-Limit': '2147483647', 'X-RateLimit-Remaining': '2147483647', 'X-RateLimit-Reset': String(SEED_RESET) });
    clock.set(MINUTE + 60_000);
    assert.equal(gateway.check(key('tp_live_example_internal')).headers['X-RateLimit-Reset'], String(SEED_RESET + 60), 'reset follows the fixed minute');
  });

  test('an unlimited override key is always admitted, even with a block on its counter', () => {
    const { clock, gateway } = gatewayAt(MINUTE);
    const internal = key('tp_live_example_internal');
    gateway.cache.apply(decision({ counterKey: mustResolve(talkpilot, internal).counterKey, until: MINUTE + 60_000 }), clock.now);
    for (let i = 0; i < 1_500; i++) {
      const r = gateway.check(internal);
      assert.equal(r.allowed, true, `request ${i + 1}`);
      assert.equal(r.reason, 'unlimited');
      assert.equal(r.headers['X-RateLimit-Remaining'], '2147483647');
    }
  });

  test('an override with higher limits (tp_live_example_high_volume) counts against 300/min', () => {
    const { gateway } = gatewayAt(MINUTE);
    let last: CheckResult | undefined;
    for (let i = 0; i < 300; i++) assert.equal((last = gateway.check(key('tp_live_example_high_volume'))).allowed, true);
    assert.equal(last?.headers['X-RateLimit-Limit'], '300');
    assert.equal(last?.headers['X-RateLimit-Remaining'], '0');
    assert.equal(gateway.check(key('tp_live_example_high_volume')).reason, 'local-limit');
  });

  test('cost: a check standing for several requests is refused when it would not fit, until it fits', () => {
    const { clock, gateway } = gatewayAt(MINUTE);
    assert.equal(gateway.check({ ...key('c'), cost: 58 }).headers['X-RateLimit-Remaining'], '2');
    clock.set(MINUTE + 5_000);
    const r = gateway.check({ ...key('c'), cost: 3 });
    assert.equal(r.reason, 'local-limit');
    // 2 left: 3 fit only when the minute resets, 55 s on; not "1" (when one more would fit).
    assert.deepEqual(r.headers, {
      'Retry-After': '55',
      'X-RateLimit-Limit': '60',
      'X-RateLimit-Remaining': '0',
      'X-RateLimit-Reset': String(SEED_RESET),
      'X-Request-Id': r.requestId,
    });
    assert.equal(gateway.check({ ...key('c'), cost: 2 }).allowed, true);
  });

  test("cost above the limit never fits: refused with a window's wait, never an Infinity header", () => {
    const { clock, gateway } = gatewayAt(MINUTE + 5_000);
    const fresh = gateway.check({ ...key('big'), cost: 61 });
    assert.equal(fresh.reason, 'local-limit');
    assert.equal(fresh.headers['Retry-After'], '60');
    gateway.check(key('big'));
    clock.advance(1_000);
    const seen = gateway.check({ ...key('big'), cost: 61 });
    assert.equal(seen.headers['Retry-After'], '60');
    assert.match(seen.headers['X-RateLimit-Reset']!, /^\d+$/);
  });
});

describe('shadow rules', () => {
  const shadow = compilePolicy(
    parsePolicyText(
      `
version: "s1"
product: Shadow test
identity:
  api_key: { header: X-API-Key }
tenant: api_key
refusal: { message: "slow down" }
rules:
  - id: trial
    default: true
    scope: api_key
    shadow: true
    limits:
      - { limit: 2, window: 10s, resolution: 1s }
`,
      'shadow-test',
    ),
  );

  test('past the limit a shadow rule admits, with reason shadow', () => {
    const { clock, gateway } = gatewayAt(MINUTE, shadow);
    assert.equal(gateway.check(key('s')).reason, 'admitted');
    assert.equal(gateway.check(key('s')).reason, 'admitted');
    const r = gateway.check(key('s'));
    assert.equal(r.allowed, true);
    assert.equal(r.status, 200);
    assert.equal(r.reason, 'shadow');
    assert.equal(r.body, undefined, 'nothing to send: the request goes through');
    assert.equal(r.headers['Retry-After'], undefined);
    assert.deepEqual(r.headers, { 'RateLimit-Policy': '"10s";q=2;w=10', RateLimit: '"10s";r=0;t=10' });
    assert.equal(gateway.stats.refused, 0);
    clock.advance(10_000);
    assert.equal(gateway.check(key('s')).reason, 'admitted', 'within the limit again');
  });

  test("a cached block on a shadow rule's counter admits too", () => {
    const { clock, gateway } = gatewayAt(MINUTE, shadow);
    const counterKey = mustResolve(shadow, key('b')).counterKey;
    gateway.cache.apply(decision({ counterKey, until: MINUTE + 5_000, window: '10s', windowMs: 10_000, limit: 2 }), clock.now);
    const r = gateway.check(key('b'));
    assert.equal(r.allowed, true);
    assert.equal(r.reason, 'shadow');
  });
});

describe('Kore.ai Automation AI (seed 001): APIs by name, subjects from the caller', () => {
  const PER_MINUTE = 'You’ve exceeded the per-minute rate limit. Please wait for sometime before retrying.';
  const HOURLY = 'You’ve exceeded the hourly rate limit. Please wait for sometime before retrying.';
  const botExport: CheckRequest = { api: 'Bot Export', subjects: { account: 'acc-1', bot: 'st-9' } };

  test("the 61st Bot Export of a bot in a minute gets the seed's per-minute message as plain text", () => {
    const { clock, gateway } = gatewayAt(MINUTE, kore);
    for (let i = 1; i <= 60; i++) {
      const r = gateway.check(botExport);
      assert.equal(r.allowed, true, `request ${i}`);
      assert.equal(r.api, 'Bot Export');
      assert.equal(r.rule, 'bot');
    }
    clock.advance(20_000);
    const r = gateway.check(botExport);
    assert.equal(r.allowed, false);
    assert.equal(r.reason, 'local-limit');
    assert.equal(r.status, 429);
    assert.equal(r.body, PER_MINUTE);
    assert.equal(r.message, PER_MINUTE);
    assert.equal(r.contentType, 'text/plain; charset=utf-8');
    assert.deepEqual(r.headers, {
      'Retry-After': '40',
      'RateLimit-Policy': '"minute";q=60;w=60, "hour";q=1800;w=3600',
      RateLimit: '"minute";r=0;t=40, "hour";r=1740;t=3580',
    });
    assert.ok(seed001.includes(PER_MINUTE.split(' Please')[0]!), "the seed's wording");
    assert.equal(
      gateway.check({ api: 'Publish Bot', subjects: { account: 'acc-1', bot: 'st-9' } }).allowed,
      true,
      'per_api: another API of the bot has its own count',
    );
    assert.equal(gateway.check({ api: 'Bot Export', subjects: { account: 'acc-1', bot: 'st-10' } }).allowed, true, 'another bot has its own count');
    clock.set(MINUTE + 60_000);
    assert.equal(gateway.check(botExport).allowed, true, 'rolling: the first 60 left the window');
  });

  test('1800 in an hour: the hourly message', () => {
    const { clock, gateway } = gatewayAt(HOUR, kore);
    for (let m = 0; m < 30; m++) {
      clock.set(HOUR + m * 60_000);
      for (let i = 0; i < 60; i++) assert.equal(gateway.check(botExport).allowed, true);
    }
    clock.set(HOUR + 30 * 60_000);
    const r = gateway.check(botExport);
    assert.equal(r.reason, 'local-limit');
    assert.equal(r.body, HOURLY);
    assert.equal(r.headers['Retry-After'], String(30 * 60), "the first minute's 60 leave the rolling hour at HOUR + 1 h");
  });

  test("a missing subject is refused with the policy's 400 naming it, as plain text, with the reason (issue #12)", () => {
    const { gateway } = gatewayAt(MINUTE, kore);
    const r = gateway.check({ api: 'Bot Export', subjects: { account: 'acc-1' } });
    assert.equal(r.allowed, false);
    assert.equal(r.reason, 'unidentified');
    assert.equal(r.status, 400);
    assert.equal(r.body, 'Missing bot: pass it with the request so its rate limit can be applied.');
    assert.equal(r.contentType, 'text/plain; charset=utf-8');
    assert.deepEqual(r.headers, {}, 'a plain body has no request id: none minted, none sent');
    assert.equal(r.detail, 'missing subject bot (rule "bot")');
    assert.equal(r.api, 'Bot Export');
  });
});

// fallback 'open' and 'closed' only apply while the decision cache is cold, which needs a decision
// feed (Kafka): they are covered by the integration tests.

describe('runtime overrides keep what was admitted (issue #12)', () => {
  /** A runtime override lookup the test changes, as quota.overrides would. */
  class Overrides {
    private readonly map = new Map<string, ReturnType<typeof compileOverride>>();
    get = (key: string) => this.map.get(key);
    set(key: string, limits: Array<{ limit: number; window: string; kind?: 'fixed' | 'rolling' }>): void {
      this.map.set(key, compileOverride({ limits: limits.map((l) => ({ kind: 'fixed', ...l })) }));
    }
  }
  const k2 = key('k2');
  const scopeKey = mustResolve(talkpilot, k2).scopeKey;
  const remaining = (r: CheckResult) => Number(r.headers['X-RateLimit-Remaining']);

  test('60 of 60 used, raised to 120: Remaining runs 59…0 and exactly 60 more are admitted; lowered to 80 with 100 used: refused at once', () => {
    const overrides = new Overrides();
    const clock = new TestClock(MINUTE);
    const gateway = new Gateway({ policy: talkpilot, clock: clock.read, gatewayId: 'test-gw', overrides });
    for (let i = 0; i < 60; i++) gateway.check(k2);
    assert.equal(gateway.check(k2).reason, 'local-limit', '60 of 60');

    clock.advance(1_000);
    overrides.set(scopeKey, [
      { limit: 120, window: '60s' },
      { limit: 1000, window: '1h' },
    ]);
    const seen: number[] = [];
    let admitted = 0;
    for (let i = 0; i < 70; i++) {
      const r = gateway.check(k2);
      if (r.allowed) {
        admitted++;
        seen.push(remaining(r));
      } else assert.equal(r.reason, 'local-limit');
    }
    assert.equal(admitted, 60, 'a single gateway admits exactly the 60 the raise added, never more');
    assert.deepEqual(
      seen,
      Array.from({ length: 60 }, (_, i) => 59 - i),
      'Remaining counts down from 59, not from 119',
    );

    // A new override object with a lower minute limit, below what was admitted: nothing more fits.
    clock.advance(1_000);
    overrides.set(scopeKey, [
      { limit: 80, window: '60s' },
      { limit: 1000, window: '1h' },
    ]);
    const lowered = gateway.check(k2);
    assert.equal(lowered.reason, 'local-limit');
    assert.equal(lowered.headers['X-RateLimit-Limit'], '80');
    assert.equal(lowered.headers['X-RateLimit-Reset'], String(SEED_RESET), 'room again when the minute resets');

    clock.set(MINUTE + 60_000);
    const next = gateway.check(k2);
    assert.equal(next.allowed, true, 'the next minute');
    assert.equal(remaining(next), 79);
  });

  test('a near snapshot made under the old limit no longer splits the room once the limit changed', () => {
    const overrides = new Overrides();
    const clock = new TestClock(MINUTE);
    const gateway = new Gateway({ policy: talkpilot, clock: clock.read, gatewayId: 'test-gw', overrides });
    const counterKey = mustResolve(talkpilot, k2).counterKey;
    gateway.cache.apply(decision({ counterKey, state: 'near', until: MINUTE + 60_000, limit: 60, observed: 60, gateways: 1, decidedAt: MINUTE }), clock.now);
    assert.equal(gateway.check(k2).reason, 'near-share', 'no room left under the 60 limit: no share');
    overrides.set(scopeKey, [
      { limit: 120, window: '60s' },
      { limit: 1000, window: '1h' },
    ]);
    const r = gateway.check(k2);
    assert.equal(r.reason, 'admitted', 'the snapshot was about limit 60; under 120 it says nothing');
  });
});

describe('unidentified requests: refuse, anonymous or admit, per rule (issue #12)', () => {
  const policy = compilePolicy(
    parsePolicyText(
      `
version: "u1"
product: Unidentified test
identity:
  api_key: { header: X-API-Key }
  ip: { header: X-Forwarded-For }
tenant: api_key|ip
refusal: { message: "slow down", body: json_error }
unidentified: { action: refuse, status: 401, message: "Missing {missing}.", error_code: NO_KEY }
apis:
  - { name: Public, routes: ["GET /public"] }
  - { name: Legacy, routes: ["GET /legacy"] }
rules:
  - id: keyed
    default: true
    scope: api_key
    limits: [{ limit: 2, window: 10s, resolution: 1s }]
  - id: public
    apis: [Public]
    scope: api_key
    unidentified: { action: anonymous }
    limits: [{ limit: 3, window: 10s, resolution: 1s }]
  - id: legacy
    apis: [Legacy]
    scope: api_key
    unidentified: { action: admit }
    limits: [{ limit: 1, window: 10s, resolution: 1s }]
`,
      'unidentified-test',
    ),
  );

  test("refuse: the status, the message naming what is missing, the policy's body and a request id", () => {
    const { gateway } = gatewayAt(MINUTE, policy);
    const r = gateway.check({ method: 'GET', path: '/other', headers: {} });
    assert.equal(r.status, 401);
    assert.equal(r.reason, 'unidentified');
    assert.deepEqual(JSON.parse(r.body!), { error: { code: 'NO_KEY', message: 'Missing api_key, api_key|ip.', request_id: r.requestId } });
    assert.match(r.requestId ?? '', MINTED, 'json_error: ids minted on refusals by default');
  });

  test("anonymous: every unidentified request shares one counter, under the rule's value", () => {
    const { gateway } = gatewayAt(MINUTE, policy);
    const anon = { method: 'GET', path: '/public', headers: {} };
    const reasons = [1, 2, 3, 4].map(() => gateway.check(anon).reason);
    assert.deepEqual(reasons, ['admitted', 'admitted', 'admitted', 'local-limit']);
    const r = mustResolve(policy, anon);
    assert.equal(r.anonymous, true);
    assert.equal(r.counterKey, '{ip=anonymous}:rule=public:api_key=anonymous', "the chain's last subject stands for the tenant");
    assert.equal(gateway.check({ ...anon, headers: { 'x-api-key': 'k' } }).reason, 'admitted', 'an identified request has its own counter');
  });

  test('admit: let through uncounted, saying why', () => {
    const { gateway } = gatewayAt(MINUTE, policy);
    for (let i = 0; i < 3; i++) {
      const r = gateway.check({ method: 'GET', path: '/legacy', headers: {} });
      assert.equal(r.allowed, true);
      assert.equal(r.reason, 'unresolved');
      assert.equal(r.detail, 'missing subject api_key, api_key|ip (rule "legacy")');
    }
  });
});

describe('request ids: minted always, on refusals, or never', () => {
  const withIds = (mint: string, body = 'json_error') =>
    compilePolicy(
      parsePolicyText(
        `
version: "r1"
product: Request id test
identity:
  api_key: { header: X-API-Key }
tenant: api_key
refusal: { message: "no", body: ${body}, request_id: { header: X-Correlation-Id, prefix: "cid-", mint: ${mint} } }
rules:
  - { id: r, default: true, scope: api_key, limits: [{ limit: 1, window: 10s, resolution: 1s }] }
`,
        'request-id-test',
      ),
    );

  test("always: every response carries one, under the policy's header and prefix; a client's own is kept", () => {
    const { gateway } = gatewayAt(MINUTE, withIds('always'));
    const a = gateway.check(key('k'));
    assert.match(a.requestId ?? '', /^cid-[a-z0-9]{16}$/);
    assert.equal(a.headers['X-Correlation-Id'], a.requestId);
    const b = gateway.check(key('k', 'mine-1'));
    assert.equal(b.allowed, false);
    assert.equal(b.headers['X-Correlation-Id'], 'mine-1');
    assert.equal(JSON.parse(b.body!).error.request_id, 'mine-1');
  });

  test("never: none minted; a client's own id is still echoed in the body, and no header is added", () => {
    const { gateway } = gatewayAt(MINUTE, withIds('never'));
    gateway.check(key('k'));
    const refused = gateway.check(key('k'));
    assert.equal(refused.requestId, undefined);
    assert.equal(JSON.parse(refused.body!).error.request_id, undefined);
    const echoed = gateway.check(key('k', 'mine-2'));
    assert.equal(JSON.parse(echoed.body!).error.request_id, 'mine-2');
    assert.equal(echoed.headers['X-Correlation-Id'], undefined);
  });

  test('a plain body mints none unless the policy asks', () => {
    const plain = compilePolicy(
      parsePolicyText(
        `
version: "p1"
product: Plain
identity: { api_key: { header: X-API-Key } }
tenant: api_key
refusal: { message: "no" }
rules:
  - { id: r, default: true, scope: api_key, limits: [{ limit: 1, window: 10s, resolution: 1s }] }
`,
        'plain',
      ),
    );
    const { gateway } = gatewayAt(MINUTE, plain);
    gateway.check(key('k'));
    assert.equal(gateway.check(key('k')).requestId, undefined);
    const { gateway: asked } = gatewayAt(MINUTE, withIds('refusals', 'plain'));
    asked.check(key('k'));
    const r = asked.check(key('k'));
    assert.match(r.requestId ?? '', /^cid-/);
    assert.equal(r.headers['X-Correlation-Id'], r.requestId, 'the client learns the id from the header');
  });
});
