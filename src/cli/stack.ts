import { parseArgs } from 'node:util';
import { EXIT, untilAborted, wantsHelp, type Command } from './command.ts';
import { ensureKafkaJars, programsFrom, resolveStack } from '../stack/index.ts';

const HELP = `Usage: quotaflow stack <up|fetch> [options]

Brings up the Kafka broker and Redis that quotaflow runs against, the same way the demo and the
tests do: KAFKA_BROKERS / REDIS_URL if set; else testcontainers if a Docker engine answers; else a
local Apache Kafka (jars from Maven Central, run on the JDK in KRaft mode) and redis-server.

Subcommands:
  up       start the services, print the variables that point at them, run until Ctrl-C
  fetch    only fetch the Kafka broker jars into ops/kafka/lib (once; later runs reuse them)

Options:
  --nodes N   Kafka nodes for the local path (default 1; 3 for a replicated cluster)
  --json      print the addresses as JSON instead of shell exports

Examples:
  quotaflow stack up                 # then, in another shell, paste the printed exports
  quotaflow stack up --nodes 3
  QUOTAFLOW_STACK=local quotaflow stack up   # ignore a Docker engine, use the JDK broker
`;

export const stackCommand: Command = {
  name: 'stack',
  summary: 'start a local Kafka + Redis (or fetch the broker jars) for development',
  help: HELP,
  async run(argv, io) {
    if (wantsHelp(argv) || argv.length === 0) {
      io.out(HELP);
      return argv.length === 0 ? EXIT.USAGE : EXIT.OK;
    }
    const { values, positionals } = parseArgs({ args: argv, options: { nodes: { type: 'string' }, json: { type: 'boolean' } }, allowPositionals: true });
    const [sub] = positionals;
    if (sub === 'fetch') {
      const version = await ensureKafkaJars(programsFrom(io.env));
      io.out(`Kafka ${version} broker jars are in ops/kafka/lib`);
      return EXIT.OK;
    }
    if (sub !== 'up') {
      io.err(`quotaflow stack: unknown subcommand '${sub}'\n  → use \`quotaflow stack up\` or \`quotaflow stack fetch\``);
      return EXIT.USAGE;
    }
    const nodes = values.nodes === undefined ? 1 : Number(values.nodes);
    if (!Number.isInteger(nodes) || nodes < 1 || nodes > 5) {
      io.err('quotaflow stack: --nodes takes a whole number from 1 to 5');
      return EXIT.USAGE;
    }
    const stack = await resolveStack({ env: io.env, kafkaNodes: nodes });
    try {
      if (values.json) {
        io.out(JSON.stringify({ brokers: stack.brokers, redisUrl: stack.redisUrl, kafka: stack.kafka, redis: stack.redis }));
      } else {
        io.out(`# Kafka ${stack.kafka.version ?? ''} (${stack.kafka.source}) and Redis ${stack.redis.version ?? ''} (${stack.redis.source}) are up. Ctrl-C stops them.`);
        io.out(`export KAFKA_BROKERS=${stack.brokers.join(',')}`);
        io.out(`export REDIS_URL=${stack.redisUrl}`);
      }
      await untilAborted(io.signal);
    } finally {
      await stack.stop();
    }
    return EXIT.OK;
  },
};
