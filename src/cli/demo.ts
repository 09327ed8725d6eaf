/**
 * The main job a newcomer runs first (`npm start`). For now a smoke pipeline over the real services:
 * it brings up Kafka and Redis (src/stack), creates quotaflow's topics, produces usage events for a
 * handful of tenants, folds them from a consumer group into per-tenant minute buckets in Redis (one
 * round trip per batch), and shows that Redis holds exactly what was produced. The aggregator and
 * gateway issues turn this into the full demo.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { EXIT, untilAborted, wantsHelp, type Command } from './command.ts';
import { progress, rate, table } from './ui.ts';
import { resolveStack } from '../stack/index.ts';
import { createKafka } from '../kafka/client.ts';
import { ensureTopics, topicNames, topicSpecs } from '../kafka/topics.ts';
import { QuotaflowError } from '../errors.ts';

const HELP = `Usage: quotaflow demo [--events N] [--tenants N] [--keep]

Runs the smoke pipeline end to end on real services: Kafka and Redis from KAFKA_BROKERS / REDIS_URL,
or testcontainers, or a local stack started for the run (and stopped after it). Produces usage
events for several tenants, folds them into rolling-window buckets in Redis through a Kafka consumer
group, and prints a per-tenant table comparing what was produced with what Redis counted.

Options:
  --events N    usage events to produce (default 50000)
  --tenants N   tenants to spread them over (default 8; the first one sends a third of all traffic)
  --keep        leave the stack running until Ctrl-C (prints its addresses)

Examples:
  npm start                               # the same as: quotaflow demo
  quotaflow demo --events 200000
  KAFKA_BROKERS=127.0.0.1:9092 REDIS_URL=redis://127.0.0.1:6379 quotaflow demo
`;

interface SmokeEvent { v: 1; t: number; region: string; gateway: string; tenant: string; api: string; cost: number }

export const demoCommand: Command = {
  name: 'demo',
  summary: 'the main job: bring up the stack and run events through Kafka into Redis',
  help: HELP,
  async run(argv, io) {
    if (wantsHelp(argv)) {
      io.out(HELP);
      return EXIT.OK;
    }
    const { values } = parseArgs({ args: argv, options: { events: { type: 'string' }, tenants: { type: 'string' }, keep: { type: 'boolean' } } });
    const total = Number(values.events ?? 50_000);
    const tenants = Number(values.tenants ?? 8);
    if (!Number.isInteger(total) || total < 1 || !Number.isInteger(tenants) || tenants < 1) {
      throw new QuotaflowError('USAGE', '--events and --tenants take whole numbers of at least 1', { hint: 'e.g. `quotaflow demo --events 10000 --tenants 4`' });
    }

    io.out('quotaflow demo — bringing up Kafka and Redis…');
    const stack = await resolveStack({ env: io.env });
    io.out(`  Kafka ${stack.kafka.version ?? ''} (${stack.kafka.source}) at ${stack.brokers.join(',')}`);
    io.out(`  Redis ${stack.redis.version ?? ''} (${stack.redis.source}) at ${stack.redisUrl}\n`);
    const runId = randomBytes(3).toString('hex');
    const kafka = createKafka({ brokers: stack.brokers, clientId: `quotaflow-demo-${runId}` });
    const admin = kafka.admin();
    // Idempotence needs unlimited retries (kafkajs warns otherwise); Ctrl-C still stops the demo.
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, retry: { retries: Number.MAX_SAFE_INTEGER, maxRetryTime: 5_000 } });
    const consumer = kafka.consumer({ groupId: `quotaflow-demo-${runId}` });
    const redis = new Redis(stack.redisUrl, { maxRetriesPerRequest: 5 });
    try {
      const names = topicNames();
      await admin.connect();
      const created = await ensureTopics(admin, topicSpecs(names));
      io.out(`Topics: ${Object.values(names).join(', ')}${created.length ? ` (created ${created.length})` : ' (already there)'}`);

      // Produce: one tenant sends a third of the traffic, the rest share the remainder.
      const produced = new Map<string, number>();
      const now = Date.now();
      const ui = progress();
      await producer.connect();
      const t0 = Date.now();
      for (let sent = 0; sent < total && !io.signal.aborted;) {
        const n = Math.min(2_000, total - sent);
        const messages = Array.from({ length: n }, (_, i) => {
          const k = sent + i;
          const index = tenants === 1 || k % 3 === 0 ? 0 : 1 + (k % (tenants - 1));
          const event: SmokeEvent = { v: 1, t: now - ((total - k) % 120_000), region: 'local', gateway: 'demo', tenant: `${runId}-acct-${index}`, api: 'Get Cases', cost: 1 };
          produced.set(event.tenant, (produced.get(event.tenant) ?? 0) + 1);
          return { key: event.tenant, value: JSON.stringify(event) };
        });
        await producer.send({ topic: names.usage, acks: -1, messages });
        sent += n;
        ui.update(`producing usage events  ${sent.toLocaleString('en-US')}/${total.toLocaleString('en-US')}  ${rate(sent, Date.now() - t0)}`);
      }
      const produceMs = Date.now() - t0;
      ui.done(`Produced ${total.toLocaleString('en-US')} usage events in ${(produceMs / 1000).toFixed(1)}s (${rate(total, produceMs)})`);

      // Consume from the start of this run's events and fold each batch into Redis in one round trip.
      const keyOf = (tenant: string) => `quotaflow-demo:{${tenant}}:minute-buckets`;
      let folded = 0;
      let batches = 0;
      const t1 = Date.now();
      const mine = new Set(produced.keys());
      const allFolded = new Promise<void>((resolve, reject) => {
        io.signal.addEventListener('abort', () => reject(new QuotaflowError('USAGE', 'stopped by Ctrl-C')), { once: true });
        void consumer.connect()
          .then(() => consumer.subscribe({ topic: names.usage, fromBeginning: true }))
          .then(() => consumer.run({
            eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
              const pipeline = redis.pipeline();
              let n = 0;
              for (const m of batch.messages) {
                const e = JSON.parse(m.value!.toString()) as SmokeEvent;
                if (!mine.has(e.tenant)) continue; // events of earlier runs on a shared Kafka
                pipeline.hincrby(keyOf(e.tenant), String(Math.floor(e.t / 60_000)), e.cost);
                n++;
              }
              if (n) await pipeline.exec();
              resolveOffset(batch.lastOffset());
              await heartbeat();
              folded += n;
              batches++;
              ui.update(`folding into Redis  ${folded.toLocaleString('en-US')}/${total.toLocaleString('en-US')}  ${rate(folded, Date.now() - t1)}  (${batches} batches, 1 round trip each)`);
              if (folded >= total) resolve();
            },
          }))
          .catch(reject);
      });
      await allFolded;
      const foldMs = Date.now() - t1;
      ui.done(`Folded ${folded.toLocaleString('en-US')} events into Redis in ${(foldMs / 1000).toFixed(1)}s (${rate(folded, foldMs)}, ${batches} Redis round trips)\n`);

      const rows: Array<Array<string | number>> = [];
      let mismatches = 0;
      for (const [tenant, count] of [...produced].sort((a, b) => b[1] - a[1])) {
        const buckets = await redis.hgetall(keyOf(tenant));
        const counted = Object.values(buckets).reduce((s, v) => s + Number(v), 0);
        if (counted !== count) mismatches++;
        rows.push([tenant, count, counted, Object.keys(buckets).length, counted === count ? '✓' : '✗']);
      }
      io.out(table(['tenant', 'produced', 'in Redis', 'minute buckets', 'exact'], rows));
      io.out(mismatches === 0
        ? `\nEvery event was counted exactly once. To enforce a policy on this pipeline: 'quotaflow stack up', then 'quotaflow aggregator --policy ops/policies/talkpilot.yaml' and 'quotaflow gateway --policy ops/policies/talkpilot.yaml' (README: The gateway).`
        : `\n${mismatches} tenant(s) differ between Kafka and Redis.`);
      if (values.keep) {
        io.out(`\nThe stack stays up until Ctrl-C:\n  export KAFKA_BROKERS=${stack.brokers.join(',')}\n  export REDIS_URL=${stack.redisUrl}`);
        await untilAborted(io.signal);
      }
      await redis.del(...[...produced.keys()].map(keyOf));
      return mismatches === 0 ? EXIT.OK : EXIT.FAILURE;
    } finally {
      await consumer.disconnect().catch(() => {});
      await producer.disconnect().catch(() => {});
      await admin.disconnect().catch(() => {});
      redis.disconnect();
      await stack.stop();
      io.out('Stopped everything the demo started.');
    }
  },
};
