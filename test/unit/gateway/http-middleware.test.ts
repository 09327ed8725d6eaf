/**
 * The node:http-shaped middleware over real HTTP on 127.0.0.1 with bare node:http, Express 5 and
 * Fastify 5: admitted requests reach the handler with the rate-limit headers, refused ones get the
 * policy's 429 and never reach it. Plus checkRequestOf, which turns a request into a check.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify from 'fastify';
import { Gateway } from '../../../src/gateway/gateway.ts';
import {
  checkRequestOf as checkRequestOrBad,
  fastifyOnRequest,
  isBadCheckRequest,
  quotaflowMiddleware,
  type MiddlewareOptions,
} from '../../../src/gateway/http.ts';
import type { CheckRequest } from '../../../src/gateway/gateway.ts';
import type { CheckResult } from '../../../src/gateway/gateway.ts';
import { loadShipped } from '../fixtures/simulate.ts';
import { TestClock } from './fixtures.ts';

const talkpilot = loadShipped('talkpilot.yaml');
const kore = loadShipped('kore-automation-ai.yaml');
const MINUTE = 1_711_108_860_000;

const SEED_BODY = [
  '{',
  '  "error": {',
  '    "code": "RATE_LIMITED",',
  '    "message": "Rate limit exceeded. Try again in 18 seconds.",',
  '    "request_id": "req_abc123"',
  '  }',
  '}',
].join('\n');

interface Running {
  url: string;
  /** How many requests reached the application's handler. */
  handled: () => number;
  close: () => Promise<void>;
}

/** One server per framework, all with the same middleware in front of a handler answering "hello". */
type Start = (gateway: Gateway, opts?: MiddlewareOptions) => Promise<Running>;

const startNode: Start = async (gateway, opts) => {
  let handled = 0;
  const mw = quotaflowMiddleware(gateway, opts);
  const server = createServer((req, res) => {
    mw(req, res, () => {
      handled++;
      res.setHeader('Content-Type', 'text/plain');
      res.end('hello');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    handled: () => handled,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
};

const startExpress: Start = async (gateway, opts) => {
  let handled = 0;
  const app = express();
  app.use(quotaflowMiddleware(gateway, opts));
  app.get('/agents', (_req, res) => {
    handled++;
    res.type('text/plain').send('hello');
  });
  app.get('/bot-export', (_req, res) => {
    handled++;
    res.type('text/plain').send('hello');
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise<void>((r, j) => server.once('listening', r).once('error', j));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    handled: () => handled,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
};

const startFastify: Start = async (gateway, opts) => {
  let handled = 0;
  const app = Fastify();
  app.addHook('onRequest', fastifyOnRequest(gateway, opts));
  for (const path of ['/agents', '/bot-export']) {
    app.get(path, (_req, reply) => {
      handled++;
      reply.type('text/plain').send('hello');
    });
  }
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, handled: () => handled, close: () => app.close() };
};

const SERVERS: [string, Start][] = [
  ['node:http createServer', startNode],
  ['Express 5 (app.use)', startExpress],
  ['Fastify 5 (onRequest hook)', startFastify],
];

const rateHeaders = (res: Response) => ({
  limit: res.headers.get('x-ratelimit-limit'),
  remaining: res.headers.get('x-ratelimit-remaining'),
  reset: res.headers.get('x-ratelimit-reset'),
  retryAfter: res.headers.get('retry-after'),
});

for (const [name, start] of SERVERS) {
  describe(`middleware over HTTP: ${name}`, () => {
    test("TalkPilot: admitted requests reach the handler with X-RateLimit-*; the 61st gets the seed's 429 and does not", async () => {
      const clock = new TestClock(MINUTE);
      const gateway = new Gateway({ policy: talkpilot, clock: clock.read });
      const results: CheckResult[] = [];
      const server = await start(gateway, { onResult: (r) => results.push(r) });
      try {
        const get = (headers: Record<string, string>) => fetch(`${server.url}/agents?limit=100`, { headers });

        const first = await get({ 'X-API-Key': 'tp_live_http' });
        assert.equal(first.status, 200);
        assert.equal(await first.text(), 'hello');
        assert.deepEqual(rateHeaders(first), { limit: '60', remaining: '59', reset: '1711108920', retryAfter: null });
        assert.equal(server.handled(), 1);

        for (let i = 2; i <= 59; i++) assert.equal(gateway.check({ headers: { 'x-api-key': 'tp_live_http' } }).allowed, true);
        const sixtieth = await get({ 'X-API-Key': 'tp_live_http' });
        assert.equal(sixtieth.status, 200);
        assert.equal(await sixtieth.text(), 'hello');
        assert.deepEqual(rateHeaders(sixtieth), { limit: '60', remaining: '0', reset: '1711108920', retryAfter: null });
        assert.equal(server.handled(), 2);

        clock.set(MINUTE + 42_000);
        const refused = await get({ 'X-API-Key': 'tp_live_http', 'X-Request-Id': 'req_abc123' });
        assert.equal(refused.status, 429);
        assert.equal(refused.headers.get('content-type'), 'application/json');
        const body = await refused.text();
        assert.equal(body, SEED_BODY);
        assert.equal(refused.headers.get('content-length'), String(Buffer.byteLength(SEED_BODY)));
        assert.deepEqual(rateHeaders(refused), { limit: '60', remaining: '0', reset: '1711108920', retryAfter: '18' });
        assert.equal(refused.headers.get('x-request-id'), 'req_abc123', "the client's id comes back");
        assert.equal(server.handled(), 2, 'the handler is not called for a refused request');
        assert.deepEqual(
          results.map((r) => r.reason),
          ['admitted', 'admitted', 'local-limit'],
          'onResult sees every result',
        );

        const anonymous = await get({});
        assert.equal(anonymous.status, 401, 'no API key: refused as the policy states (issue #12)');
        const id = anonymous.headers.get('x-request-id');
        assert.match(id ?? '', /^req_[a-z0-9]{16}$/, 'with a minted request id');
        assert.equal(JSON.parse(await anonymous.text()).error.request_id, id);
        assert.equal(anonymous.headers.get('x-ratelimit-limit'), null, 'no key, no counter to report');
        assert.equal(server.handled(), 2, 'the handler is not called');

        const unlimited = await get({ 'X-API-Key': 'tp_live_example_internal' });
        assert.equal(unlimited.status, 200);
        await unlimited.arrayBuffer();
        assert.deepEqual(
          rateHeaders(unlimited),
          { limit: '2147483647', remaining: '2147483647', reset: '1711108920', retryAfter: null },
          'an unlimited key gets the headers too',
        );
        assert.equal(server.handled(), 3);

        clock.set(MINUTE + 60_000);
        const again = await get({ 'X-API-Key': 'tp_live_http' });
        assert.equal(again.status, 200);
        assert.equal(await again.text(), 'hello');
        assert.deepEqual(rateHeaders(again), { limit: '60', remaining: '59', reset: '1711108980', retryAfter: null });
        assert.equal(server.handled(), 4);
      } finally {
        await server.close();
      }
    });

    test('Kore: API and subjects from X-Quotaflow-* headers (checkHeaders), refused with the plain per-minute message', async () => {
      const clock = new TestClock(MINUTE);
      const gateway = new Gateway({ policy: kore, clock: clock.read });
      const server = await start(gateway, { checkHeaders: true });
      try {
        const headers = { 'X-Quotaflow-Api': 'Bot Export', 'X-Quotaflow-Subjects': 'account=a1&bot=b1' };
        for (let i = 1; i <= 60; i++) {
          const res = await fetch(`${server.url}/bot-export`, { headers });
          assert.equal(res.status, 200, `request ${i}`);
          await res.arrayBuffer();
        }
        assert.equal(server.handled(), 60);
        const refused = await fetch(`${server.url}/bot-export`, { headers });
        assert.equal(refused.status, 429);
        assert.equal(refused.headers.get('content-type'), 'text/plain; charset=utf-8');
        assert.equal(await refused.text(), 'You’ve exceeded the per-minute rate limit. Please wait for sometime before retrying.');
        assert.equal(refused.headers.get('retry-after'), '60');
        assert.equal(refused.headers.get('ratelimit-policy'), '"minute";q=60;w=60, "hour";q=1800;w=3600');
        assert.equal(server.handled(), 60);
        const otherBot = await fetch(`${server.url}/bot-export`, { headers: { ...headers, 'X-Quotaflow-Subjects': 'account=a1&bot=b2' } });
        assert.equal(otherBot.status, 200);
        await otherBot.arrayBuffer();
      } finally {
        await server.close();
      }
    });
  });
}

describe('quotaflowMiddleware', () => {
  test('returns whether the request may proceed, and calls next only then', () => {
    const gateway = new Gateway({ policy: talkpilot, clock: () => MINUTE });
    const mw = quotaflowMiddleware(gateway);
    const req = { url: '/agents', method: 'GET', headers: { 'x-api-key': 'k' } } as unknown as IncomingMessage;
    const written: { headers: Record<string, unknown>; statusCode: number; body?: string } = { headers: {}, statusCode: 200 };
    const res = {
      setHeader: (k: string, v: unknown) => void (written.headers[k] = v),
      end: (b: string) => void (written.body = b),
      set statusCode(s: number) {
        written.statusCode = s;
      },
    } as unknown as Parameters<typeof mw>[1];
    let nexts = 0;
    for (let i = 0; i < 60; i++)
      assert.equal(
        mw(req, res, () => nexts++),
        true,
      );
    assert.equal(nexts, 60);
    assert.equal(written.body, undefined);
    assert.equal(
      mw(req, res, () => nexts++),
      false,
    );
    assert.equal(nexts, 60);
    assert.equal(written.statusCode, 429);
    assert.equal(written.headers['X-RateLimit-Remaining'], '0');
    assert.match(written.body ?? '', /"code": "RATE_LIMITED"/);
  });
});

describe('checkRequestOf', () => {
  /** checkRequestOf, for requests it can make a check of (a bad one fails the test). */
  const checkRequestOf = (...args: Parameters<typeof checkRequestOrBad>): CheckRequest => {
    const check = checkRequestOrBad(...args);
    assert.ok(!isBadCheckRequest(check), `a bad request: ${JSON.stringify(check)}`);
    return check;
  };
  const req = (url: string, headers: IncomingMessage['headers'] = {}, method = 'GET') => ({ url, method, headers }) as IncomingMessage;

  test('path without the query; the query parsed, first value of a repeated name kept', () => {
    const check = checkRequestOf(req('/v1/agents/7?limit=100&tag=a&tag=b&q=a%20b+c&empty=', {}, 'POST'));
    assert.equal(check.method, 'POST');
    assert.equal(check.path, '/v1/agents/7');
    assert.deepEqual(check.query, { limit: '100', tag: 'a', q: 'a b c', empty: '' });
    assert.equal(check.requestId, undefined);
    assert.equal(check.api, undefined);
    assert.equal(check.subjects, undefined);
  });

  test('no query string: no query; no url: "/"', () => {
    assert.deepEqual(checkRequestOf(req('/plain')), { method: 'GET', path: '/plain', headers: {} });
    const bare = checkRequestOf({ headers: {} } as IncomingMessage);
    assert.equal(bare.path, '/');
    assert.equal(bare.method, 'GET');
    assert.equal(checkRequestOf(req('/x?')).path, '/x');
  });

  test('the request id from x-request-id, or the header named by requestIdHeader (any case)', () => {
    assert.equal(checkRequestOf(req('/', { 'x-request-id': 'req_abc123' })).requestId, 'req_abc123');
    assert.equal(checkRequestOf(req('/', { 'x-request-id': '' })).requestId, undefined, 'empty: none');
    assert.equal(checkRequestOf(req('/', { 'x-correlation-id': 'c-1' }), { requestIdHeader: 'x-correlation-id' }).requestId, 'c-1');
    assert.equal(
      checkRequestOf(req('/', { 'x-correlation-id': 'c-1' }), { requestIdHeader: 'X-Correlation-Id' }).requestId,
      'c-1',
      'Node lower-cases header names',
    );
    assert.equal(checkRequestOf(req('/', { 'x-request-id': 'r' }), { requestIdHeader: 'x-correlation-id' }).requestId, undefined);
  });

  test('X-Quotaflow-Api and X-Quotaflow-Subjects are read only with checkHeaders', () => {
    const headers = { 'x-quotaflow-api': 'Bot Export', 'x-quotaflow-subjects': 'account=a1&bot=b1' };
    const ignored = checkRequestOf(req('/', headers));
    assert.equal(ignored.api, undefined, 'off by default: a client could set them');
    assert.equal(ignored.subjects, undefined);
    const read = checkRequestOf(req('/', headers), { checkHeaders: true });
    assert.equal(read.api, 'Bot Export');
    assert.deepEqual(read.subjects, { account: 'a1', bot: 'b1' });
    const encoded = checkRequestOf(req('/', { 'x-quotaflow-subjects': 'account=acc%201&table=t%26x' }), { checkHeaders: true });
    assert.deepEqual(encoded.subjects, { account: 'acc 1', table: 't&x' }, 'URL-encoded values are decoded');
    assert.equal(encoded.api, undefined);
    const dash = checkRequestOf(req('/', { 'x-quotaflow-api': encodeURIComponent('Bot Export – Status') }), { checkHeaders: true });
    assert.equal(dash.api, 'Bot Export – Status', 'a non-ASCII API name arrives percent-encoded');
    assert.equal(checkRequestOf(req('/', { 'x-quotaflow-api': '100%' }), { checkHeaders: true }).api, '100%', 'a stray % is kept as written');
  });

  test("subjects from the subjects option win over the headers' ones", () => {
    const check = checkRequestOf(req('/', { 'x-quotaflow-subjects': 'account=a1&bot=b1' }), {
      checkHeaders: true,
      subjects: () => ({ bot: 'verified-bot', user: 'u1' }),
    });
    assert.deepEqual(check.subjects, { account: 'a1', bot: 'verified-bot', user: 'u1' });
  });

  test('X-Quotaflow-Subjects naming __proto__, constructor or prototype is a bad request, never a subject (issue #12)', () => {
    for (const name of ['__proto__', 'constructor', 'prototype']) {
      const bad = checkRequestOrBad(req('/', { 'x-quotaflow-subjects': `${name}=x&account=a1` }), { checkHeaders: true });
      assert.ok(isBadCheckRequest(bad), name);
      assert.match(bad.bad, new RegExp(`"${name}" is a reserved name`));
    }
    const ok = checkRequestOf(req('/', { 'x-quotaflow-subjects': 'account=a1&account=a2&toString=t' }), { checkHeaders: true });
    assert.deepEqual(ok.subjects, { account: 'a1', toString: 't' }, 'the first value of a repeated name; an inherited name is plain data');
    assert.equal(Object.getPrototypeOf(ok.subjects), Object.prototype);
  });
});
