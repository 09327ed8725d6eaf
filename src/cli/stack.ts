import { QuotaflowError } from '../errors.ts';
import { EXIT, untilAborted, type CommandIO } from './command.ts';
import { defineCommand } from './define.ts';
import { SHARED, shared } from './settings.ts';
import { ensureKafkaJars, programsFrom, resolveStack } from '../stack/index.ts';
import { parseRegionNames, startLocalRegions } from '../stack/regions.ts';
import { topicPrefix } from './settings.ts';

export const stackCommand = defineCommand({
  name: 'stack',
  summary: 'start a local Kafka + Redis (or fetch the broker jars) for development',
  usage: ['quotaflow stack <up|fetch> [options]'],
  description: `Brings up the Kafka broker and Redis that quotaflow runs against, the same way the demo and the
tests do: KAFKA_BROKERS / REDIS_URL if set; else testcontainers if a Docker engine answers; else a
local Apache Kafka (jars from Maven Central, run on the JDK in KRaft mode) and redis-server.

With --regions, each region gets a local Kafka and Redis of its own, with quotaflow's topics
created, and one Apache Kafka MirrorMaker 2 mirrors every region's quota.rollup to the others
(east's arrives on west as east.quota.rollup). It prints each region's variables.`,
  subcommands: [
    { name: 'up', help: 'start the services, print the variables that point at them, run until Ctrl-C' },
    { name: 'fetch', help: 'only fetch the Kafka broker and MirrorMaker 2 jars into ops/kafka/lib (once; later runs reuse them)' },
  ],
  options: {
    nodes: { type: 'string', value: 'N', help: 'Kafka nodes for the local path (default 1; 3 for a replicated cluster)' },
    regions: { type: 'string', value: 'LIST', help: 'two to four regions, e.g. east,west: a local Kafka and Redis each, and MirrorMaker 2' },
    ...shared('topic-prefix'),
    json: { ...SHARED.json, help: 'print the addresses as JSON instead of shell exports' },
  },
  examples: [
    'quotaflow stack up                 # then, in another shell, paste the printed exports',
    'quotaflow stack up --nodes 3',
    'quotaflow stack up --regions east,west   # two regions and MirrorMaker 2 between them',
    'QUOTAFLOW_STACK=local quotaflow stack up   # ignore a Docker engine, use the JDK broker',
  ],
  exitCodes: {
    0: 'stopped by Ctrl-C (up), or the jars are in place (fetch)',
    2: 'bad usage',
    3: 'a prerequisite is missing (Java, Maven, redis-server, a free port) or a service did not start',
  },
  async run({ values, subcommand, io }) {
    if (subcommand === 'fetch') {
      const version = await ensureKafkaJars(programsFrom(io.env));
      io.out(`Kafka ${version} broker and MirrorMaker 2 jars are in ops/kafka/lib`);
      return EXIT.OK;
    }
    if (values.regions !== undefined) {
      if (values.nodes !== undefined)
        throw new QuotaflowError('USAGE', '--nodes does not apply with --regions (one broker per region)', { hint: 'leave out --nodes' });
      return regionsUp(parseRegionNames(values.regions), topicPrefix(values, io.env), values.json ?? false, io);
    }
    const nodes = values.nodes === undefined ? 1 : Number(values.nodes);
    if (!Number.isInteger(nodes) || nodes < 1 || nodes > 5) {
      throw new QuotaflowError('USAGE', `--nodes ${JSON.stringify(values.nodes)} is not a whole number from 1 to 5`, {
        hint: 'e.g. `--nodes 3` for a replicated cluster',
      });
    }
    const stack = await resolveStack({ env: io.env, kafkaNodes: nodes });
    try {
      if (values.json) {
        io.out(JSON.stringify({ brokers: stack.brokers, redisUrl: stack.redisUrl, kafka: stack.kafka, redis: stack.redis }));
      } else {
        io.out(
          `# Kafka ${stack.kafka.version ?? ''} (${stack.kafka.source}) and Redis ${stack.redis.version ?? ''} (${stack.redis.source}) are up. Ctrl-C stops them.`,
        );
        io.out(`export KAFKA_BROKERS=${stack.brokers.join(',')}`);
        io.out(`export REDIS_URL=${stack.redisUrl}`);
      }
      await untilAborted(io.signal);
    } finally {
      await stack.stop();
    }
    return EXIT.OK;
  },
});

async function regionsUp(names: string[], prefix: string, json: boolean, io: CommandIO): Promise<number> {
  if (io.env.KAFKA_BROKERS || io.env.REDIS_URL) {
    throw new QuotaflowError('USAGE', '--regions starts a local Kafka and Redis per region: KAFKA_BROKERS / REDIS_URL name one region only', {
      hint: 'unset KAFKA_BROKERS and REDIS_URL to run --regions',
    });
  }
  const stack = await startLocalRegions({ programs: programsFrom(io.env), names, topicPrefix: prefix });
  try {
    const regions = stack.regions.map((r) => ({ name: r.name, brokers: r.brokers, redisUrl: r.redisUrl }));
    if (json) {
      io.out(JSON.stringify({ regions, rollupTopic: stack.rollupTopic, mirrorMaker: { version: stack.mirrorMaker.version, dir: stack.mirrorMaker.dir } }));
    } else {
      io.out(
        `# ${names.length} regions are up, each its own Kafka ${stack.mirrorMaker.version} and Redis; MirrorMaker 2 mirrors ${stack.rollupTopic} between them. Ctrl-C stops everything.`,
      );
      for (const r of regions) {
        io.out(`# region ${r.name}: paste in a shell of that region (and pass --region ${r.name})`);
        io.out(`export KAFKA_BROKERS=${r.brokers.join(',')} REDIS_URL=${r.redisUrl}`);
      }
    }
    await untilAborted(io.signal);
  } finally {
    await stack.stop();
  }
  return EXIT.OK;
}
