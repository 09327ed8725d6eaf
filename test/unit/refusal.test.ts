/** Refusal bodies and headers, checked character for character against the seed documents. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { admittedHeaders, ietfFields, refuse, type LimitReport } from '../../src/refusal/index.ts';
import { loadShipped, seedText } from './fixtures/simulate.ts';

const NOW = 1711108902_000; // 18 s before the seed's X-RateLimit-Reset of 1711108920
const seed004 = seedText('004_0a66da9ad9370d50.txt');

const minute = (count: number, resetAt = 1711108920_000): LimitReport => ({ limit: 60, windowMs: 60_000, count, resetAt });
const hour = (count: number, resetAt = 1711111320_000): LimitReport => ({ limit: 1000, windowMs: 3_600_000, count, resetAt });

describe('TalkPilot (seed 004)', () => {
  const policy = loadShipped('talkpilot.yaml');

  test('the documented 429: Retry-After 18, X-RateLimit-*, and the JSON body exactly', () => {
    const r = refuse({ refusal: policy.refusal, limits: [minute(60), hour(300)], now: NOW, requestId: 'req_abc123' });
    assert.equal(r.status, 429);
    assert.equal(r.contentType, 'application/json');
    const documentedHeaders = 'Retry-After: 18\nX-RateLimit-Limit: 60\nX-RateLimit-Remaining: 0\nX-RateLimit-Reset: 1711108920';
    assert.equal(
      Object.entries(r.headers)
        .map(([k, v]) => `${k}: ${v}`)
        .join('\n'),
      documentedHeaders,
    );
    const documentedBody = [
      '{',
      '  "error": {',
      '    "code": "RATE_LIMITED",',
      '    "message": "Rate limit exceeded. Try again in 18 seconds.",',
      '    "request_id": "req_abc123"',
      '  }',
      '}',
    ].join('\n');
    assert.equal(r.body, documentedBody);
    assert.ok(seed004.includes(`HTTP/1.1 429 Too Many Requests\n${documentedHeaders}\n`));
    assert.ok(seed004.includes(`\`\`\`json theme={null}\n${documentedBody}\n\`\`\``));
  });

  test('admitted responses carry the same headers minus Retry-After', () => {
    const h = admittedHeaders({ refusal: policy.refusal, limits: [minute(18), hour(300)], now: NOW });
    assert.deepEqual(h, { 'X-RateLimit-Limit': '60', 'X-RateLimit-Remaining': '42', 'X-RateLimit-Reset': '1711108920' });
    assert.ok(seed004.includes('X-RateLimit-Limit: 60\nX-RateLimit-Remaining: 42\nX-RateLimit-Reset: 1711108920'));
  });

  test('refused by the hour: the message and Retry-After follow the hour, X-RateLimit still the minute, with nothing remaining until the hour lets requests through', () => {
    const r = refuse({ refusal: policy.refusal, limits: [minute(10), hour(1000)], now: NOW, requestId: 'r1' });
    assert.equal(r.headers['Retry-After'], '2418');
    assert.equal(r.headers['X-RateLimit-Limit'], '60');
    // A refused client has no requests left, although the minute alone would allow 50 more.
    assert.equal(r.headers['X-RateLimit-Remaining'], '0');
    assert.equal(r.headers['X-RateLimit-Reset'], '1711111320', 'when the hour has room, not when the minute resets');
    assert.equal(r.message, 'Rate limit exceeded. Try again in 2418 seconds.');
  });

  test('Retry-After rounds up to whole seconds', () => {
    const r = refuse({ refusal: policy.refusal, limits: [minute(60, NOW + 17_001)], now: NOW });
    assert.equal(r.headers['Retry-After'], '18');
    assert.ok(!r.body.includes('request_id'), 'no request id, no request_id field');
  });
});

describe('Kore.ai messages (plain bodies)', () => {
  test('Automation AI: per-minute and hourly messages of seed 001', () => {
    const policy = loadShipped('kore-automation-ai.yaml');
    const byMinute = refuse({ refusal: policy.refusal, limits: [minute(60), hour(100)], now: NOW });
    assert.equal(byMinute.body, 'You’ve exceeded the per-minute rate limit. Please wait for sometime before retrying.');
    assert.equal(byMinute.contentType, 'text/plain; charset=utf-8');
    const byHour = refuse({ refusal: policy.refusal, limits: [minute(3), { ...hour(1800), limit: 1800 }], now: NOW });
    assert.equal(byHour.body, 'You’ve exceeded the hourly rate limit. Please wait for sometime before retrying.');
  });
  test("a window without its own message uses the fallback (seed 002's wording)", () => {
    const policy = loadShipped('kore-automation-ai.yaml');
    const day: LimitReport = { limit: 5, windowMs: 86_400_000, count: 5, resetAt: NOW + 1000 };
    assert.equal(
      refuse({ refusal: policy.refusal, limits: [day], now: NOW }).body,
      'Rate limit for this API has been reached. Please try again after some time.',
    );
  });
});

describe('IETF RateLimit-Policy / RateLimit', () => {
  test('every limit of the rule, as structured-field lists', () => {
    assert.deepEqual(ietfFields([minute(60), hour(42)], NOW), {
      'RateLimit-Policy': '"minute";q=60;w=60, "hour";q=1000;w=3600',
      RateLimit: '"minute";r=0;t=18, "hour";r=958;t=2418',
    });
  });
  test('sent on refusals of policies that ask for them, with Retry-After', () => {
    const policy = loadShipped('bolna.yaml');
    const r = refuse({ refusal: policy.refusal, limits: [{ limit: 500, windowMs: 60_000, count: 500, resetAt: NOW + 12_500 }], now: NOW });
    assert.deepEqual(r.headers, { 'Retry-After': '13', 'RateLimit-Policy': '"minute";q=500;w=60', RateLimit: '"minute";r=0;t=13' });
    assert.equal(r.body, 'Too Many Requests');
  });
});
