import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { QuotaflowError } from '../../src/errors.ts';
import { checkJava, checkMaven, checkRedisServer } from '../../src/stack/prereqs.ts';
import { startLocalRedis } from '../../src/stack/redis-local.ts';
import { startLocalKafka } from '../../src/stack/kafka-local.ts';
import { resolveStack } from '../../src/stack/index.ts';
import { freePort } from '../../src/stack/ports.ts';
import { programsFrom } from '../../src/stack/prereqs.ts';
import { configureLogging } from '../../src/log.ts';

configureLogging({ level: 'silent' });

/** Asserts a QuotaflowError with this code whose message and hint match. */
async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp, hint: RegExp) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof QuotaflowError, `expected a QuotaflowError, got ${String(e)}`);
    assert.equal(e.code, code);
    assert.match(e.message, message);
    assert.match(e.hint ?? '', hint);
    return true;
  });
}

describe('a bad environment gets a clear message and the one thing to do', () => {
  test('no Java', () => rejectsWith(checkJava('/nonexistent/java'), 'PREREQ_MISSING', /Java was not found/, /apt-get install -y openjdk-17/));
  test('no Maven', () => rejectsWith(checkMaven('/nonexistent/mvn'), 'PREREQ_MISSING', /Maven was not found/, /apt-get install -y maven/));
  test('no redis-server', () =>
    rejectsWith(checkRedisServer('/nonexistent/redis-server'), 'PREREQ_MISSING', /redis-server was not found/, /apt-get install -y redis-server|REDIS_URL/));

  test('the local stack reports a missing program before starting anything', async () => {
    const programs = { ...programsFrom(process.env), redisServer: '/nonexistent/redis-server' };
    await rejectsWith(startLocalRedis({ programs }), 'PREREQ_MISSING', /redis-server/, /apt-get install/);
    await rejectsWith(startLocalKafka({ programs: { ...programs, java: '/nonexistent/java' } }), 'PREREQ_MISSING', /Java/, /openjdk-17/);
  });

  test('a port that is taken', async (t) => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    t.after(() => server.close());
    const port = (server.address() as { port: number }).port;
    await rejectsWith(startLocalRedis({ programs: programsFrom(process.env), port }), 'PORT_IN_USE', new RegExp(`port ${port}`), /ss -ltnp|free port/);
    await rejectsWith(
      startLocalKafka({ programs: programsFrom(process.env), brokerPorts: [port] }),
      'PORT_IN_USE',
      new RegExp(`port ${port}`),
      /ss -ltnp|free port/,
    );
  });

  test('KAFKA_BROKERS that does not answer', { timeout: 30_000 }, async () => {
    const port = await freePort(); // nothing listens there
    await rejectsWith(
      resolveStack({ env: { KAFKA_BROKERS: `127.0.0.1:${port}`, REDIS_URL: process.env.REDIS_URL }, probeTimeoutMs: 2_000 }),
      'SERVICE_UNREACHABLE',
      new RegExp(`KAFKA_BROKERS=127.0.0.1:${port}`),
      /unset KAFKA_BROKERS/,
    );
  });

  test('REDIS_URL that does not answer', { timeout: 30_000 }, async () => {
    const port = await freePort();
    await rejectsWith(
      resolveStack({ env: { KAFKA_BROKERS: process.env.KAFKA_BROKERS, REDIS_URL: `redis://127.0.0.1:${port}` }, probeTimeoutMs: 2_000 }),
      'SERVICE_UNREACHABLE',
      /does not answer PING/,
      /unset REDIS_URL/,
    );
  });
});
