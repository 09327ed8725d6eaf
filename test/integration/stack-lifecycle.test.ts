import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { pidAlive } from '../../src/stack/process.ts';
import { PROJECT_ROOT } from '../../src/stack/paths.ts';
import { startLocalKafka } from '../../src/stack/kafka-local.ts';
import { programsFrom } from '../../src/stack/prereqs.ts';
import { configureLogging } from '../../src/log.ts';
import { kafkaPort } from '../../src/kafka/client.ts';
import { ensureTopics } from '../../src/kafka/topics.ts';
import { testKafkaClient, uniqueName } from '../support/integration.ts';
import { waitFor } from '../support/wait.ts';

configureLogging({ level: 'warn' });

/** `read`'s answer once it stops failing. */
const eventually = <T>(read: () => Promise<T>, timeoutMs: number): Promise<T> =>
  waitFor('a read that succeeds', async () => ({ value: await read() }), { timeoutMs, everyMs: 250 }).then((r) => r.value);

async function waitUntilGone(pids: number[], timeoutMs: number): Promise<number[]> {
  await waitFor('the processes to exit', () => !pids.some(pidAlive), { timeoutMs, everyMs: 100 }).catch(() => {});
  return pids.filter(pidAlive);
}

/** Runs the fixture, waits for the pids line, and returns the child and what it started. */
async function startFixture(mode: 'hang' | 'crash') {
  const child = spawn(process.execPath, ['--import', 'tsx', join(PROJECT_ROOT, 'test/integration/fixtures/start-stack.ts'), mode], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    void exited.then(() => reject(new Error(`fixture exited before starting its stack:\n${stderr}`)));
  });
  const { pids } = JSON.parse(first) as { pids: number[] };
  return { child, pids, exited, stderr: () => stderr };
}

describe('services started by quotaflow never outlive the process that started them', () => {
  test('SIGKILL of the owner: the Kafka JVM and redis-server are reaped', { timeout: 120_000 }, async () => {
    const { child, pids, exited } = await startFixture('hang');
    assert.equal(pids.length, 2, 'one Kafka JVM and one redis-server');
    assert.ok(pids.every(pidAlive), 'services run while their owner lives');
    child.kill('SIGKILL');
    await exited;
    assert.deepEqual(await waitUntilGone(pids, 15_000), [], 'no service left running');
  });

  test('an uncaught error in the owner: the services are reaped', { timeout: 120_000 }, async () => {
    const { pids, exited } = await startFixture('crash');
    assert.notEqual(await exited, 0, 'the fixture crashed');
    assert.deepEqual(await waitUntilGone(pids, 15_000), [], 'no service left running');
  });
});

describe('a three-node KRaft cluster on loopback', () => {
  test('three brokers with one cluster id and a static quorum; a replicated topic survives a killed node, which rejoins', { timeout: 180_000 }, async (t) => {
    const t0 = Date.now();
    const mark = (what: string) => t.diagnostic(`${what} at ${((Date.now() - t0) / 1000).toFixed(1)}s`);
    // A short broker session, so the controller notices the killed node in ~3 s instead of 9 s.
    const cluster = await startLocalKafka({
      programs: programsFrom(process.env),
      nodes: 3,
      heapMb: 256,
      quickStart: true,
      overrides: { 'broker.session.timeout.ms': 3_000, 'broker.heartbeat.interval.ms': 500 },
    });
    mark('3 nodes up');
    // Bootstrap from the nodes that stay up: a client whose only live seed connection is the killed
    // node keeps failing to reconnect to it, which tests the client rather than the cluster.
    const seeds = cluster.brokers.filter((_, i) => i !== 1);
    const kafka = kafkaPort({ brokers: seeds, clientId: uniqueName('it-3'), client: testKafkaClient(), minLogLevel: 'nothing' });
    const admin = kafka.admin();
    const producer = kafka.producer({ idempotent: true });
    try {
      await admin.connect();
      const described = await admin.cluster();
      assert.equal(described.brokers, 3);
      assert.equal(described.clusterId, cluster.clusterId);
      const topic = uniqueName('it-replicated');
      await ensureTopics(admin, [{ topic, partitions: 3, replicationFactor: 3, configs: {} }]);
      const meta = await admin.topicMetadata([topic]);
      assert.ok(meta[0]!.partitions.every((p) => p.replicas.length === 3));

      mark('replicated topic created');
      await cluster.killNode(2);
      mark('node 2 killed');
      // The cluster's part: fence the dead node and move every leadership off it. Only then write, so
      // the test does not depend on how long a client's retries last while the controller reacts.
      await eventually(async () => {
        const m = await admin.topicMetadata([topic]);
        const onDeadNode = m[0]!.partitions.filter((p) => p.leader === 2 || p.leader < 0);
        if (onDeadNode.length) throw new Error(`${onDeadNode.length} partition(s) still led by node 2`);
      }, 60_000);
      mark('leaders moved off node 2');
      await producer.connect();
      mark('producer connected');
      await producer.send(Array.from({ length: 100 }, (_, i) => ({ topic, key: `k${i}`, value: `v${i}` })));
      mark('sent');
      // The admin's metadata may still name the killed node as a leader; a client's admin may not
      // retry a refused connection there, so read again (bounded) as any client must across a leader change.
      const offsets = await eventually(() => admin.offsets(topic), 30_000);
      assert.equal(
        offsets.reduce((sum, p) => sum + p.high, 0),
        100,
        'all 100 written with a node down',
      );
      mark('written with node 2 down');

      await cluster.startNode(2);
      const deadline = Date.now() + 60_000;
      let brokers = 0;
      while (Date.now() < deadline) {
        brokers = await admin.cluster().then(
          (c) => c.brokers,
          () => 0,
        );
        if (brokers === 3) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.equal(brokers, 3, 'the restarted node rejoined');
      mark('node 2 rejoined');
    } finally {
      await producer.disconnect().catch(() => {});
      await admin.disconnect().catch(() => {});
      await cluster.stop();
    }
    assert.deepEqual(
      await waitUntilGone(
        cluster.nodes.map((n) => n.process.pid),
        10_000,
      ),
      [],
    );
  });
});
