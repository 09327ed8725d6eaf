/** `quotaflow demo`'s command line: the options, checked and turned into DemoOptions, and the seed policy it enforces by default. */
import { parseArgs } from 'node:util';
import { PROJECT_ROOT } from '../../stack/paths.ts';
import { parseDuration } from '../../policy/index.ts';
import { QuotaflowError } from '../../errors.ts';

export const SEED_POLICY = 'ops/policies/talkpilot.yaml';

export interface DemoOptions {
  durationMs: number | undefined;
  policyFile: string;
  topicPrefix: string;
  keyPrefix: string;
  json: boolean;
  keep: boolean;
}

export const usageError = (message: string, hint: string) => new QuotaflowError('USAGE', message, { hint });

export function parseOptions(argv: string[]): DemoOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        duration: { type: 'string' }, policy: { type: 'string' }, json: { type: 'boolean' }, keep: { type: 'boolean' },
        'topic-prefix': { type: 'string' }, 'key-prefix': { type: 'string' },
      },
    }));
  } catch (e) {
    throw usageError(e instanceof Error ? e.message : String(e), 'run `quotaflow demo --help` for the options');
  }
  const topicPrefix = (values['topic-prefix'] as string | undefined) ?? '';
  if (!/^[A-Za-z0-9._-]*$/.test(topicPrefix)) {
    throw usageError(`--topic-prefix ${JSON.stringify(topicPrefix)} has characters Kafka refuses in topic names`, 'use letters, digits, ".", "_" and "-", e.g. `--topic-prefix demo-1.`');
  }
  const keyPrefix = (values['key-prefix'] as string | undefined) ?? 'qf:';
  if (keyPrefix === '' || /[{}\s]/.test(keyPrefix)) {
    throw usageError(`--key-prefix ${JSON.stringify(keyPrefix)} is empty or has braces or spaces`, 'e.g. `--key-prefix demo:` (braces would break the Redis Cluster hash tags)');
  }
  const durationMs = parseDurationOption(values.duration as string | undefined);
  if (values.keep && durationMs === undefined) {
    throw usageError('--keep only makes sense with --duration', 'e.g. `quotaflow demo --duration 60s --keep`: the stack stays up after the summary until Ctrl-C');
  }
  return {
    durationMs, topicPrefix, keyPrefix,
    policyFile: (values.policy as string | undefined) ?? `${PROJECT_ROOT}/${SEED_POLICY}`,
    json: values.json === true, keep: values.keep === true,
  };
}

/** `60s`, `5m`, `1h`, or a number of seconds; at least a second. */
function parseDurationOption(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) * 1_000 : parseDuration(text.trim());
  if (ms === undefined || !(ms >= 1_000)) {
    throw usageError(`--duration ${JSON.stringify(text)} is not a duration of a second or more`, 'e.g. `--duration 60s`, `--duration 5m`, or `--duration 90` (seconds)');
  }
  return ms;
}
