/**
 * `quotaflow limits set|get|rm`: per-key overrides at run time, through the compacted quota.overrides
 * topic. Aggregators and gateways follow that topic and apply a change without a restart; raising a
 * blocked key's limit lifts its block at once.
 */
import { userInfo } from 'node:os';
import { QuotaflowError } from '../errors.ts';
import { kafkaPort, requireTopics } from '../kafka/client.ts';
import { topicNames } from '../kafka/topics.ts';
import { readOverrides } from '../overrides/feed.ts';
import { OverrideSchema } from '../events/index.ts';
import { compilePolicy, decodeScopeKey, loadPolicyFile, tryParseDuration, type CompiledPolicy } from '../policy/index.ts';
import { EXIT } from './command.ts';
import { defineCommand, type Invocation } from './define.ts';
import { SHARED, kafkaBrokers, kafkaClient, shared, topicPrefix } from './settings.ts';
import { table } from './ui.ts';

/** With --policy: the key names a rule of the policy and matches that rule's scope. */
function checkAgainstPolicy(policy: CompiledPolicy, key: string, rule: string, subjects: string[]): void {
  const r = policy.rules.find((x) => x.id === rule);
  if (!r) {
    throw new QuotaflowError('USAGE', `the policy has no rule "${rule}" (key ${key})`, { hint: `its rules are: ${policy.rules.map((x) => x.id).join(', ')}` });
  }
  const ok = r.scope.length === subjects.length && r.scope.every((part, i) => part.includes(subjects[i]!));
  if (!ok) {
    throw new QuotaflowError('USAGE', `key ${key} does not match the scope of rule "${rule}" (${r.scopeText})`, {
      hint: '`quotaflow policy explain FILE --request JSON` prints the key a request counts under',
    });
  }
}

function parseTime(text: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(n))
    throw new QuotaflowError('USAGE', `--expires ${JSON.stringify(text)} is not a time`, {
      hint: 'give an ISO time (2026-12-31T00:00:00Z) or epoch milliseconds',
    });
  return n;
}

const OPTIONS = {
  key: { type: 'string', value: 'KEY', help: 'the scope key (required for set and rm)' },
  limit: { type: 'string', value: 'N', multiple: true, help: 'requests allowed per window (repeat with --window for several limits)' },
  window: { type: 'string', value: 'W', multiple: true, help: 'the window of the preceding --limit: 60s, 1h, 1d...' },
  kind: { type: 'string', value: 'K', help: 'rolling (default) or fixed, for every limit given' },
  unlimited: { type: 'boolean', help: 'never limit this key' },
  reason: { type: 'string', value: 'TEXT', help: 'why (a support ticket), kept with the override' },
  expires: { type: 'string', value: 'TIME', help: 'ISO time or epoch ms when it stops applying (informational for now)' },
  policy: { type: 'string', value: 'FILE', help: 'check the key against this policy (the rule exists, the scope matches)' },
  ...shared('brokers', 'topic-prefix', 'kafka-client'),
  json: { ...SHARED.json, help: 'get: print the overrides as JSON' },
} as const;

async function run({ values, subcommand: sub, io }: Invocation<typeof OPTIONS, 'set' | 'get' | 'rm'>): Promise<number> {
  const brokers = kafkaBrokers(values, io.env);
  const topic = topicNames(topicPrefix(values, io.env)).overrides;
  const client = kafkaClient(values, io.env);
  await requireTopics(brokers, [topic], client);
  const kafka = kafkaPort({ brokers, clientId: 'quotaflow-limits', client, minLogLevel: 'error' });

  if (sub === 'get') {
    const all = await readOverrides(kafka, topic);
    const shown = values.key === undefined ? [...all.values()] : all.has(values.key) ? [all.get(values.key)!] : [];
    if (values.json) io.out(JSON.stringify(values.key === undefined ? shown : (shown[0] ?? null), null, 2));
    else if (shown.length === 0) io.out(values.key === undefined ? 'no runtime overrides' : `no runtime override for ${values.key}`);
    else {
      io.out(
        table(
          ['key', 'limits', 'reason', 'set at', 'set by'],
          shown.map((o) => [
            o.key,
            'unlimited' in o ? 'unlimited' : o.limits.map((l) => `${l.limit}/${l.window}${l.kind === 'fixed' ? ' fixed' : ''}`).join(', '),
            o.reason ?? '',
            new Date(o.setAt).toISOString(),
            o.setBy ?? '',
          ]),
        ),
      );
    }
    return values.key !== undefined && shown.length === 0 ? EXIT.FAILURE : EXIT.OK;
  }

  if (!values.key)
    throw new QuotaflowError('USAGE', `--key is required for ${sub}`, {
      hint: "e.g. --key rule=per-key:api_key=tp_live_42 (`quotaflow policy explain` prints a request's key)",
    });
  let decoded: ReturnType<typeof decodeScopeKey>;
  try {
    decoded = decodeScopeKey(values.key);
  } catch (e) {
    throw new QuotaflowError('USAGE', (e as Error).message, { hint: 'a key looks like rule=per-key:api_key=tp_live_42' });
  }
  if (values.policy)
    checkAgainstPolicy(
      compilePolicy(await loadPolicyFile(values.policy)),
      values.key,
      decoded.rule,
      decoded.scope.map((s) => s.subject),
    );
  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  try {
    if (sub === 'rm') {
      await producer.send([{ topic, key: values.key, value: null }]);
      io.out(`removed the override for ${values.key} (the policy's limits apply again)`);
      return EXIT.OK;
    }
    const limits = values.limit ?? [];
    const windows = values.window ?? [];
    if (values.unlimited ? limits.length > 0 || windows.length > 0 : limits.length === 0 || limits.length !== windows.length) {
      throw new QuotaflowError(
        'USAGE',
        values.unlimited ? '--unlimited takes no --limit/--window' : 'give one --window for each --limit (at least one pair), or --unlimited',
        {
          hint: 'e.g. --limit 300 --window 60s --limit 10000 --window 1h',
        },
      );
    }
    const kind = values.kind ?? 'rolling';
    if (kind !== 'rolling' && kind !== 'fixed')
      throw new QuotaflowError('USAGE', `--kind ${JSON.stringify(kind)} is not rolling or fixed`, { hint: 'e.g. --kind fixed' });
    const record: Record<string, unknown> = {
      schemaVersion: 1,
      key: values.key,
      rule: decoded.rule,
      subjects: Object.fromEntries(decoded.scope.map((s) => [s.subject, s.value])),
      setAt: Date.now(),
      setBy: userInfo().username,
    };
    if (values.reason !== undefined) record.reason = values.reason;
    if (values.expires !== undefined) record.expiresAt = parseTime(values.expires);
    if (values.unlimited) record.unlimited = true;
    else {
      record.limits = limits.map((l, i) => {
        const n = Number(l);
        if (!Number.isInteger(n) || n < 1)
          throw new QuotaflowError('USAGE', `--limit ${JSON.stringify(l)} is not a whole number of at least 1`, { hint: 'e.g. --limit 300' });
        if (tryParseDuration(windows[i]!) === undefined) {
          throw new QuotaflowError('USAGE', `--window ${JSON.stringify(windows[i])} is not a duration`, {
            hint: 'a whole number and a unit: --window 60s, 1h or 1d',
          });
        }
        return { limit: n, window: windows[i]!, kind };
      });
    }
    const parsed = OverrideSchema.safeParse(record);
    if (!parsed.success)
      throw new QuotaflowError('USAGE', `the override is not valid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, {
        hint: '`quotaflow limits --help` shows examples',
      });
    await producer.send([{ topic, key: values.key, value: JSON.stringify(parsed.data) }]);
    io.out(
      `set ${values.key}: ${values.unlimited ? 'unlimited' : (parsed.data as { limits: Array<{ limit: number; window: string }> }).limits.map((l) => `${l.limit}/${l.window}`).join(', ')}`,
    );
    return EXIT.OK;
  } finally {
    await producer.disconnect();
  }
}

export const limitsCommand = defineCommand({
  name: 'limits',
  summary: 'set, show or remove per-key custom limits at run time (quota.overrides)',
  usage: [
    'quotaflow limits set --key KEY (--limit N --window W [--limit N --window W ...] | --unlimited)\n                     [--kind rolling|fixed] [--reason TEXT] [--expires TIME] [--policy FILE]',
    'quotaflow limits get [--key KEY] [--json]',
    'quotaflow limits rm  --key KEY',
  ],
  description: `Per-key custom limits, changed at run time without a restart.

KEY is the scope key of the rule and subjects the override is for, as \`quotaflow policy explain\`
prints it: rule=<rule id>:<subject>=<value>..., e.g. rule=per-key:api_key=tp_live_42.
Overrides are records on the compacted quota.overrides topic; every aggregator and gateway follows
it and applies a change within about a second. A runtime override beats one in the policy file;
\`rm\` writes a tombstone, so the policy's limits apply again.`,
  subcommands: [
    { name: 'set', help: "give KEY these limits (or --unlimited) in place of its rule's" },
    { name: 'get', help: "print the runtime overrides, or only KEY's" },
    { name: 'rm', help: "remove KEY's override" },
  ],
  options: OPTIONS,
  examples: [
    'quotaflow limits set --key rule=per-key:api_key=tp_live_42 --limit 300 --window 60s --limit 10000 --window 1h --reason "ticket 1234"',
    'quotaflow limits set --key rule=per-key:api_key=monitoring --unlimited',
    'quotaflow limits get',
    'quotaflow limits get --key rule=per-key:api_key=tp_live_42 --json',
    'quotaflow limits rm --key rule=per-key:api_key=tp_live_42',
  ],
  exitCodes: { 0: 'done', 1: 'get found no override for --key', 2: 'bad usage', 3: 'Kafka unreachable' },
  run,
});
