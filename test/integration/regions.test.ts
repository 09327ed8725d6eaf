/**
 * Two regions on loopback, each its own Kafka and Redis, and a real MirrorMaker 2 between them
 * (src/stack/regions.ts): each region's rollup topic arrives in the other under the region's name,
 * both ways and nothing else; a SIGKILLed MirrorMaker 2, started again, loses nothing (it may send
 * some records twice: it is at-least-once, which absolute rollup totals make harmless); stopping
 * the regions leaves no process behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { configureLogging } from '../../src/log.ts';
import { kafkaPort } from '../../src/kafka/client.ts';
import type { KafkaPort } from '../../src/kafka/port.ts';
import { pidAlive } from '../../src/stack/process.ts';
import { programsFrom } from '../../src/stack/prereqs.ts';
import { startLocalRegions } from '../../src/stack/regions.ts';
import { regionStatus } from '../../src/cli/regions.ts';
import { decodeRollup, encodeRollup, rollupKey } from '../../src/events/index.ts';
import { testKafkaClient, uniqueName } from '../support/integration.ts';
import { waitFor } from '../support/wait.ts';

configureLogging({ level: 'warn' });

const port = (brokers: string[]) => kafkaPort({ brokers, clientId: uniqueName('it-regions'), client: testKafkaClient(), minLogLevel: 'nothing' });

/** Rollups of 20 counters of `region`, totals from..to-1 (each total a distinct record). */
async function produce(kafka: KafkaPort, topic: string, from: number, to: number, region: string): Promise<void> {
  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  try {
    const records = [];
    for (let i = from; i < to; i++) {
      const rollup = {
        schemaVersion: 1 as const,
        region,
        counterKey: `{api_key=${region}-k${i % 20}}:rule=per-key:api_key=${region}-k${i % 20}`,
        tenant: `api_key=${region}-k${i % 20}`,
        bucketMs: 1_000,
        bucketIndex: Math.floor(Date.now() / 1_000),
        total: i,
        publishedAt: Date.now(),
      };
      records.push({ topic, key: rollupKey(rollup), value: encodeRollup(rollup) });
    }
    await producer.send(records);
  } finally {
    await producer.disconnect();
  }
}

/** Every value on `topic` (all partitions from the start) once at least `expected` distinct ones have arrived. */
async function readUntil(kafka: KafkaPort, topic: string, expected: number, timeoutMs: number): Promise<{ distinct: Set<string>; records: number }> {
  const admin = kafka.admin();
  await admin.connect();
  let partitions: number[];
  try {
    // MirrorMaker 2 creates the remote topic; until then there is nothing to read.
    partitions = await waitFor(
      `${topic} to exist`,
      async () => (await admin.listTopics()).includes(topic) && (await admin.offsets(topic)).map((p) => p.partition),
      { timeoutMs, everyMs: 250 },
    );
  } finally {
    await admin.disconnect();
  }
  const distinct = new Set<string>();
  let records = 0;
  const reader = kafka.read(topic, new Map(partitions.map((p) => [p, 0])), (_p, batch) => {
    for (const r of batch) {
      records++;
      const d = decodeRollup(r.value);
      assert.ok(d.ok, 'a rollup, as it was sent');
      distinct.add(`${d.rollup.region}:${d.rollup.total}`);
    }
  });
  try {
    await waitFor(`${expected} distinct records on ${topic}`, () => distinct.size >= expected, { timeoutMs, everyMs: 100 });
    return { distinct, records };
  } finally {
    await reader.stop();
  }
}

test('two regions and MirrorMaker 2: rollups mirrored both ways under the region name, nothing lost across a SIGKILL, no process left', {
  timeout: 420_000,
}, async (t) => {
  const t0 = Date.now();
  const mark = (what: string) => t.diagnostic(`${what} at ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  const prefix = `${uniqueName('rg')}.`;
  const stack = await startLocalRegions({ programs: programsFrom(process.env), names: ['east', 'west'], topicPrefix: prefix, quickStart: true });
  const pids = stack.pids;
  mark('two regions and MirrorMaker 2 up');
  const [east, west] = stack.regions as [(typeof stack.regions)[0], (typeof stack.regions)[0]];
  try {
    assert.equal(stack.rollupTopic, `${prefix}quota.rollup`);
    assert.notDeepEqual(east.brokers, west.brokers, 'each region its own Kafka');
    assert.notEqual(east.redisUrl, west.redisUrl, 'each region its own Redis');
    const eastKafka = port(east.brokers);
    const westKafka = port(west.brokers);

    await produce(eastKafka, stack.rollupTopic, 0, 200, 'east');
    await produce(westKafka, stack.rollupTopic, 0, 100, 'west');
    const onWest = await readUntil(westKafka, `east.${stack.rollupTopic}`, 200, 90_000);
    const onEast = await readUntil(eastKafka, `west.${stack.rollupTopic}`, 100, 90_000);
    mark('mirrored both ways');
    assert.deepEqual([...onWest.distinct].sort(), Array.from({ length: 200 }, (_, i) => `east:${i}`).sort());
    assert.deepEqual([...onEast.distinct].sort(), Array.from({ length: 100 }, (_, i) => `west:${i}`).sort());

    // Only the rollup topic is mirrored: no usage, decisions or other topics under a region's name.
    const admin = westKafka.admin();
    await admin.connect();
    const mirrored = (await admin.listTopics().finally(() => admin.disconnect())).filter((n) => n.startsWith('east.'));
    assert.deepEqual(mirrored.sort(), ['east.heartbeats', `east.${stack.rollupTopic}`].sort());

    // `quotaflow regions` on west: its own rollups and east's, mirrored a moment ago.
    const status = await regionStatus(westKafka, prefix, 5 * 60_000, Date.now());
    assert.deepEqual(
      status.map((s) => [s.region, s.topic, s.records, s.counters, s.invalid]),
      [
        ['(this region)', stack.rollupTopic, 100, 20, 0],
        ['east', `east.${stack.rollupTopic}`, onWest.records, 20, 0],
      ],
    );
    assert.ok(status[1]!.lagMs! < 120_000, `east's newest rollup is recent: ${status[1]!.lagMs} ms`);

    // SIGKILL: what east writes meanwhile arrives once MirrorMaker 2 runs again.
    await stack.mirrorMaker.kill();
    assert.ok(!pidAlive(stack.mirrorMaker.process.pid));
    await produce(eastKafka, stack.rollupTopic, 200, 300, 'east');
    await stack.mirrorMaker.restart();
    mark('MirrorMaker 2 killed and restarted');
    const after = await readUntil(westKafka, `east.${stack.rollupTopic}`, 300, 90_000);
    assert.deepEqual([...after.distinct].sort(), Array.from({ length: 300 }, (_, i) => `east:${i}`).sort(), 'nothing lost');
    t.diagnostic(`records on west after the restart: ${after.records} for 300 distinct (${after.records - 300} sent twice)`);
  } finally {
    await stack.stop();
  }
  const left = [...pids, stack.mirrorMaker.process.pid];
  await waitFor('every process of the regions to exit', () => !left.some(pidAlive), { timeoutMs: 20_000, everyMs: 100 }).catch(() => {});
  assert.deepEqual(left.filter(pidAlive), [], 'no broker, redis-server or MirrorMaker 2 left running');
});
