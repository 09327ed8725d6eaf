import { QuotaflowError } from '../errors.ts';
import { EXIT, untilAborted } from './command.ts';
import { defineCommand } from './define.ts';
import { SHARED } from './settings.ts';
import { ensureKafkaJars, programsFrom, resolveStack } from '../stack/index.ts';

export const stackCommand = defineCommand({
  name: 'stack',
  summary: 'start a local Kafka + Redis (or fetch the broker jars) for development',
  usage: ['quotaflow stack <up|fetch> [options]'],
  description: `Brings up the Kafka broker and Redis that quotaflow runs against, the same way the demo and the
tests do: KAFKA_BROKERS / REDIS_URL if set; else testcontainers if a Docker engine answers; else a
local Apache Kafka (jars from Maven Central, run on the JDK in KRaft mode) and redis-server.`,
  subcommands: [
    { name: 'up', help: 'start the services, print the variables that point at them, run until Ctrl-C' },
    { name: 'fetch', help: 'only fetch the Kafka broker jars into ops/kafka/lib (once; later runs reuse them)' },
  ],
  options: {
    nodes: { type: 'string', value: 'N', help: 'Kafka nodes for the local path (default 1; 3 for a replicated cluster)' },
    json: { ...SHARED.json, help: 'print the addresses as JSON instead of shell exports' },
  },
  examples: [
    'quotaflow stack up                 # then, in another shell, paste the printed exports',
    'quotaflow stack up --nodes 3',
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
      io.out(`Kafka ${version} broker jars are in ops/kafka/lib`);
      return EXIT.OK;
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
