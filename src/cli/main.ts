#!/usr/bin/env node
/**
 * The `quotaflow` command. The only place (with the other entry points under ops/) that configures
 * logging and turns errors into exit codes; the environment is read through settings.ts.
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { configureLogging } from '../log.ts';
import { isQuotaflowError } from '../errors.ts';
import { VERSION } from '../version.ts';
import { EXIT, type Command, type CommandIO } from './command.ts';
import { SHARED, logFormat, logLevel } from './settings.ts';
import { stackCommand } from './stack.ts';
import { demoCommand } from './demo.ts';
import { policyCommand } from './policy.ts';
import { topicsCommand } from './topics.ts';
import { aggregatorCommand } from './aggregator.ts';
import { gatewayCommand } from './gateway.ts';
import { limitsCommand } from './limits.ts';
import { auditCommand } from './audit.ts';
import { replayCommand } from './replay.ts';
import { regionsCommand } from './regions.ts';

/** Every command, in the order `quotaflow --help` lists them. */
export const COMMANDS: readonly Command[] = [
  demoCommand,
  stackCommand,
  policyCommand,
  topicsCommand,
  aggregatorCommand,
  gatewayCommand,
  limitsCommand,
  auditCommand,
  replayCommand,
  regionsCommand,
];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  const fallbacks = Object.entries(SHARED).flatMap(([flag, o]) => ('env' in o ? [[`--${flag}`, o.env] as const] : []));
  const flagWidth = Math.max(...fallbacks.map(([flag]) => flag.length));
  return [
    'quotaflow — a distributed rate-limit accountant',
    '',
    'Usage: quotaflow <command> [options]',
    '       quotaflow --version',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    "Run `quotaflow <command> --help` for a command's options and examples.",
    'Logs go to stderr: readable lines on a terminal, JSON lines otherwise (QUOTAFLOW_LOG_FORMAT=json|pretty);',
    'QUOTAFLOW_LOG=debug|info|warn|error|silent sets the level.',
    '',
    'Flags several commands share, and the variables they fall back to:',
    ...fallbacks.map(([flag, variable]) => `  ${flag.padEnd(flagWidth)}  ${variable}`),
  ].join('\n');
}

/** Where main writes: the process's stdout and stderr, or a test's capture. */
export interface Streams {
  stdout: { write(text: string): unknown };
  stderr: { write(text: string): unknown };
}

export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env, streams: Streams = process): Promise<number> {
  configureLogging({ level: logLevel(env), format: logFormat(env, process.stderr.isTTY === true) });

  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    streams.stdout.write(usage() + '\n');
    return name === undefined ? EXIT.USAGE : EXIT.OK;
  }
  if (name === '--version') {
    streams.stdout.write(`quotaflow ${VERSION}\n`);
    return EXIT.OK;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    streams.stderr.write(`quotaflow: unknown command '${name}' → run \`quotaflow --help\` for the list of commands\n`);
    return EXIT.USAGE;
  }

  const controller = new AbortController();
  const stop = stopOnSignal(controller, name, streams);
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const io: CommandIO = {
    out: (t) => streams.stdout.write(t.endsWith('\n') ? t : t + '\n'),
    err: (t) => streams.stderr.write(t.endsWith('\n') ? t : t + '\n'),
    env,
    signal: controller.signal,
  };
  try {
    return await command.run(rest, io);
  } catch (e) {
    if (isQuotaflowError(e)) {
      // A wrong command line is one line: what is wrong and where the help is.
      if (e.code === 'USAGE') {
        io.err(`quotaflow ${name}: ${e.message}${e.hint ? ` → ${e.hint}` : ''}`);
        return EXIT.USAGE;
      }
      io.err(`quotaflow ${name}: ${e.describe()}`);
      if (['PREREQ_MISSING', 'PORT_IN_USE', 'SERVICE_UNREACHABLE', 'SERVICE_START_FAILED'].includes(e.code)) {
        return EXIT.ENVIRONMENT;
      }
      return EXIT.FAILURE;
    }
    io.err(`quotaflow ${name}: unexpected error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    return EXIT.FAILURE;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

/**
 * The first SIGINT/SIGTERM aborts `io.signal`: the command stops cleanly. Under `npm start` tsx
 * sometimes relays to its child the Ctrl-C the child already got, so a signal within half a second
 * of the first is that echo and is ignored; a later one is the user's second Ctrl-C and quits at
 * once, without waiting for the shutdown (services a command started go with the process: see
 * src/stack/process.ts).
 */
function stopOnSignal(controller: AbortController, name: string, streams: Streams): () => void {
  let firstAt: number | undefined;
  return () => {
    if (firstAt === undefined) {
      firstAt = Date.now();
      controller.abort();
    } else if (Date.now() - firstAt > 500) {
      streams.stderr.write(`quotaflow ${name}: stopped again, so quit at once without finishing its shutdown\n`);
      process.exit(EXIT.INTERRUPTED);
    }
  };
}

// `tsx src/cli/main.ts ...` (npm start, npm run quotaflow) runs this file directly; the bin script imports it.
// Compared by real path: run through a symlinked checkout, argv names the link and the module its target.
const realPath = (path: string) => {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
};
if (process.argv[1] !== undefined && realPath(resolve(process.argv[1])) === realPath(fileURLToPath(import.meta.url))) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
