/** `quotaflow demo`'s options: declared, checked and turned into DemoOptions, and the seed policy it enforces by default. */
import { PROJECT_ROOT } from '../../stack/paths.ts';
import { tryParseDuration } from '../../policy/index.ts';
import { QuotaflowError } from '../../errors.ts';
import type { Values } from '../define.ts';
import { SHARED, kafkaClient, keyPrefix as keyPrefixOf, topicPrefix } from '../settings.ts';
import type { KafkaClientName } from '../../kafka/port.ts';

export const SEED_POLICY = 'policies/talkpilot.yaml';

export const DEMO_OPTIONS = {
  duration: { type: 'string', value: 'D', help: 'stop after D of traffic: 60s, 5m, or seconds (default: run until Ctrl-C)' },
  policy: {
    type: 'string',
    value: 'FILE',
    help: `the policy to enforce (default ${SEED_POLICY}); the traffic's plain paths\n(GET /calls...) must resolve under it: a default rule (bolna.yaml works too)`,
  },
  json: { ...SHARED.json, help: 'print the summary as JSON on stdout (the live view and progress go to stderr)' },
  'topic-prefix': {
    ...SHARED['topic-prefix'],
    help: "prefix of quotaflow's topic names; without one, the standard names, so\n`quotaflow audit` and `quotaflow limits` work alongside; the aggregator's\nconsumer group is <P>quotaflow-demo",
  },
  'key-prefix': SHARED['key-prefix'],
  'kafka-client': SHARED['kafka-client'],
  keep: { type: 'boolean', help: 'after a --duration run, keep the stack up until Ctrl-C and print its addresses' },
} as const;

export interface DemoOptions {
  durationMs: number | undefined;
  policyFile: string;
  topicPrefix: string;
  keyPrefix: string;
  kafkaClient: KafkaClientName;
  json: boolean;
  keep: boolean;
}

export const usageError = (message: string, hint: string) => new QuotaflowError('USAGE', message, { hint });

export function demoOptions(values: Values<typeof DEMO_OPTIONS>, env: NodeJS.ProcessEnv): DemoOptions {
  const keyPrefix = keyPrefixOf(values, env);
  const durationMs = parseDurationOption(values.duration);
  if (values.keep && durationMs === undefined) {
    throw usageError(
      '--keep only makes sense with --duration',
      'e.g. `quotaflow demo --duration 60s --keep`: the stack stays up after the summary until Ctrl-C',
    );
  }
  return {
    durationMs,
    topicPrefix: topicPrefix(values, env),
    keyPrefix,
    kafkaClient: kafkaClient(values, env),
    policyFile: values.policy ?? `${PROJECT_ROOT}/${SEED_POLICY}`,
    json: values.json === true,
    keep: values.keep === true,
  };
}

/** `60s`, `5m`, `1h`, or a number of seconds; at least a second. */
function parseDurationOption(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) * 1_000 : tryParseDuration(text.trim());
  if (ms === undefined || !(ms >= 1_000)) {
    throw usageError(
      `--duration ${JSON.stringify(text)} is not a duration of a second or more`,
      'e.g. `--duration 60s`, `--duration 5m`, or `--duration 90` (seconds)',
    );
  }
  return ms;
}
