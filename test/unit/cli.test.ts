/**
 * Every command in the registry, through main() as a user runs it: `--help`, `--version` and a wrong
 * command line. None of these paths may reach Kafka or Redis (the environment names neither), and a
 * wrong line is one line on stderr with exit code 2, never a stack trace.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { COMMANDS, main } from '../../src/cli/main.ts';
import { EXIT } from '../../src/cli/command.ts';
import { topicsCommand } from '../../src/cli/topics.ts';
import { kafkaBrokers, kafkaClient, keyPrefix, metricsPort, redisUrl, topicPrefix } from '../../src/cli/settings.ts';
import { isQuotaflowError } from '../../src/errors.ts';
import { VERSION } from '../../src/version.ts';

async function quotaflow(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const streams = { stdout: { write: (t: string) => (stdout += t) }, stderr: { write: (t: string) => (stderr += t) } };
  const code = await main(argv, { QUOTAFLOW_LOG: 'silent' }, streams);
  return { code, stdout, stderr };
}

/**
 * A wrong command line: exit 2, nothing on stdout, one line on stderr naming `what` and, for what the
 * parser finds, the command's --help (a command's own checks give their own next step).
 */
async function refused(argv: string[], what: string | RegExp, { namesHelp = true } = {}): Promise<void> {
  const r = await quotaflow(...argv);
  const context = `quotaflow ${argv.join(' ')}: exit ${r.code}, stderr:\n${r.stderr}`;
  assert.equal(r.code, EXIT.USAGE, context);
  assert.equal(r.stdout, '', context);
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${context}`);
  assert.doesNotMatch(r.stderr, /^\s*at /m, `no stack trace: ${context}`);
  if (namesHelp) assert.ok(r.stderr.includes(`quotaflow ${argv[0]} --help`), `names the help: ${context}`);
  if (typeof what === 'string') assert.ok(r.stderr.includes(what), `names ${what}: ${context}`);
  else assert.match(r.stderr, what, context);
}

/**
 * An example's words as a POSIX shell splits its first command: quotes, `\` continuations, and up
 * to a comment, a pipe or a redirect.
 */
function words(example: string): string[] {
  const out: string[] = [];
  let word: string | undefined;
  for (let i = 0; i < example.length; i++) {
    const c = example[i]!;
    if (c === '\\' && example[i + 1] === '\n') i++;
    else if (c === "'" || c === '"') {
      const end = example.indexOf(c, i + 1);
      word = (word ?? '') + example.slice(i + 1, end);
      i = end;
    } else if (/\s/.test(c)) {
      if (word !== undefined) out.push(word);
      word = undefined;
    } else if (word === undefined && '#|>'.includes(c)) break;
    else word = (word ?? '') + c;
  }
  return word === undefined ? out : [...out, word];
}

describe('every command', () => {
  test('the registry lists each command once, each with examples', () => {
    assert.equal(new Set(COMMANDS.map((c) => c.name)).size, COMMANDS.length);
    for (const c of COMMANDS) assert.ok(c.examples.length > 0, c.name);
  });

  for (const command of COMMANDS) {
    describe(command.name, () => {
      test('--help starts with its usage and shows every example', async () => {
        for (const flag of ['--help', '-h']) {
          const r = await quotaflow(command.name, flag);
          assert.equal(r.code, EXIT.OK, r.stderr);
          assert.match(r.stdout, new RegExp(`^Usage: quotaflow ${command.name}\\b`));
          for (const example of command.examples) assert.ok(r.stdout.includes(example.replaceAll('\n', '\n  ')), `${command.name} --help shows: ${example}`);
        }
      });

      test('an unknown flag is one line and exit 2', () => refused([command.name, '--no-such-flag'], 'unknown option --no-such-flag'));

      test('--version prints the version', async () => {
        const r = await quotaflow(command.name, '--version');
        assert.equal(r.code, EXIT.OK, r.stderr);
        assert.equal(r.stdout, `quotaflow ${VERSION}\n`);
      });

      test('its examples are command lines it accepts', () => {
        for (const example of command.examples) {
          const argv = words(example);
          while (/^[A-Z_]+=/.test(argv[0] ?? '')) argv.shift();
          if (argv[0] !== 'quotaflow') continue; // npm start, curl
          const named = COMMANDS.find((c) => c.name === argv[1]);
          assert.ok(named, `${example}: no command ${argv[1]}`);
          assert.equal(named.read(argv.slice(2)).kind, 'run', example);
        }
      });
    });
  }
});

describe('a wrong command line', () => {
  test('quotaflow --version and quotaflow --help', async () => {
    assert.deepEqual(await quotaflow('--version'), { code: EXIT.OK, stdout: `quotaflow ${VERSION}\n`, stderr: '' });
    const help = await quotaflow('--help');
    assert.equal(help.code, EXIT.OK);
    for (const c of COMMANDS) assert.match(help.stdout, new RegExp(`^  ${c.name} +${c.summary.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
  });

  test('each kind of mistake names what is wrong', async () => {
    await refused(['gateway', '--policy'], '--policy needs a value (FILE)');
    await refused(['aggregator', '--policy', '--json'], /--policy needs a value \(FILE\) before --json/);
    await refused(['audit', '--json=yes'], '--json takes no value');
    await refused(['audit', 'extra'], "unexpected argument 'extra'");
    await refused(['audit', '--json', '--format', 'csv'], 'two formats', { namesHelp: false });
    await refused(['topics', 'drop'], "unknown subcommand 'drop': use create or describe");
    await refused(['limits', '--json'], 'limits needs a subcommand: set, get or rm');
    await refused(['limits', 'get', 'extra'], "unexpected argument 'extra'");
    await refused(['policy', 'validate'], 'policy validate needs at least one FILE');
    await refused(['policy', 'explain', 'a.yaml', 'b.yaml'], 'policy explain needs exactly one FILE');
    await refused(['stack', 'up', '--nodes', '9'], '--nodes "9"', { namesHelp: false });
    await refused(['topics', 'describe', '--prefix', 'a', '--topic-prefix', 'b'], 'the same option');
  });

  test('a subcommand command given nothing shows its help, but exits 2', async () => {
    for (const name of ['stack', 'policy', 'topics', 'limits']) {
      const r = await quotaflow(name);
      assert.equal(r.code, EXIT.USAGE, name);
      assert.match(r.stdout, new RegExp(`^Usage: quotaflow ${name}\\b`));
    }
  });

  test('an unknown command', async () => {
    const r = await quotaflow('frobnicate');
    assert.equal(r.code, EXIT.USAGE);
    assert.match(r.stderr, /^quotaflow: unknown command 'frobnicate' → run `quotaflow --help`/);
  });
});

describe('the shared flags', () => {
  test('a flag beats its variable, and the variable stands in for it', () => {
    assert.deepEqual(kafkaBrokers({}, { KAFKA_BROKERS: 'k1:9092, k2:9092' }), ['k1:9092', 'k2:9092']);
    assert.deepEqual(kafkaBrokers({ brokers: 'k3:9092' }, { KAFKA_BROKERS: 'k1:9092' }), ['k3:9092']);
    assert.equal(redisUrl({}, { REDIS_URL: 'redis://r:6379' }), 'redis://r:6379');
    assert.equal(topicPrefix({}, { QUOTAFLOW_TOPIC_PREFIX: 'staging.' }), 'staging.');
    assert.equal(topicPrefix({ 'topic-prefix': '' }, { QUOTAFLOW_TOPIC_PREFIX: 'staging.' }), '');
    assert.equal(topicPrefix({}, {}), '');
    assert.equal(keyPrefix({}, { QUOTAFLOW_KEY_PREFIX: 'staging:' }), 'staging:');
    assert.equal(keyPrefix({ 'key-prefix': 'mine:' }, { QUOTAFLOW_KEY_PREFIX: 'staging:' }), 'mine:');
    assert.equal(keyPrefix({}, {}), 'qf:');
    assert.equal(kafkaClient({}, { QUOTAFLOW_KAFKA_CLIENT: 'platformatic' }), 'platformatic');
    assert.equal(kafkaClient({ 'kafka-client': 'kafkajs' }, { QUOTAFLOW_KAFKA_CLIENT: 'platformatic' }), 'kafkajs');
    assert.equal(kafkaClient({}, {}), 'kafkajs');
    assert.equal(metricsPort({}, { QUOTAFLOW_METRICS_PORT: '9464' }), 9464);
    assert.equal(metricsPort({}, { QUOTAFLOW_METRICS_PORT: '' }), undefined, 'set but empty is not set');
  });

  test('missing or bad values are usage errors naming where they came from', () => {
    const usage = (f: () => unknown, message: RegExp) => assert.throws(f, (e) => isQuotaflowError(e) && e.code === 'USAGE' && message.test(e.describe()));
    usage(() => kafkaBrokers({}, {}), /no Kafka brokers[\s\S]*--brokers[\s\S]*KAFKA_BROKERS[\s\S]*quotaflow stack up/);
    usage(() => redisUrl({}, { REDIS_URL: '' }), /no Redis URL[\s\S]*--redis[\s\S]*REDIS_URL/);
    usage(() => topicPrefix({}, { QUOTAFLOW_TOPIC_PREFIX: 'bad/name' }), /^QUOTAFLOW_TOPIC_PREFIX "bad\/name"/);
    usage(() => keyPrefix({}, { QUOTAFLOW_KEY_PREFIX: '{t}' }), /^QUOTAFLOW_KEY_PREFIX "\{t\}" is empty or has braces/);
    usage(() => keyPrefix({ 'key-prefix': '' }, {}), /^--key-prefix "" is empty/);
    usage(() => kafkaClient({ 'kafka-client': 'rdkafka' }, {}), /^--kafka-client "rdkafka" is not a Kafka client[\s\S]*kafkajs or platformatic/);
    usage(() => metricsPort({ 'metrics-port': 'x' }, {}), /^--metrics-port "x" is not a port number/);
    usage(() => metricsPort({}, { QUOTAFLOW_METRICS_PORT: '70000' }), /^QUOTAFLOW_METRICS_PORT "70000"/);
  });

  test('topics still takes --prefix for --topic-prefix', () => {
    const line = topicsCommand.read(['describe', '--prefix', 'staging.']);
    assert.equal(line.kind === 'run' && line.values['topic-prefix'], 'staging.');
  });
});
