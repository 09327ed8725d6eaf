/**
 * A CLI command: `quotaflow <name> ...`. Each command lives in its own file under src/cli/ and is
 * listed once in src/cli/main.ts. `run` returns the process exit code; it throws QuotaflowError for
 * failures the user can act on (main prints `describe()` and exits with EXIT.FAILURE or EXIT.USAGE).
 */
import { QuotaflowError } from '../errors.ts';

export interface Command {
  name: string;
  /** One line for `quotaflow --help`. */
  summary: string;
  /** The full `quotaflow <name> --help` text, with examples. */
  help: string;
  run(argv: string[], io: CommandIO): Promise<number>;
}

export interface CommandIO {
  out: (text: string) => void;
  err: (text: string) => void;
  env: NodeJS.ProcessEnv;
  /**
   * Aborted on SIGINT/SIGTERM: long-running commands stop cleanly when it fires. A second signal
   * (half a second or more later) exits at once with EXIT.INTERRUPTED: main.ts handles it.
   */
  signal: AbortSignal;
}

/** Exit codes scripts can rely on. */
export const EXIT = {
  OK: 0,
  /** The command ran and found a problem (an invalid policy, a failed check). */
  FAILURE: 1,
  /** The command line itself is wrong. */
  USAGE: 2,
  /** A prerequisite or service is missing or down. */
  ENVIRONMENT: 3,
  /** Stopped by Ctrl-C (SIGINT) before it finished: 128 + 2, as shells report it. */
  INTERRUPTED: 130,
} as const;

/** The Kafka brokers from --brokers, else KAFKA_BROKERS; a usage error naming the fix when neither is set. */
export function brokersFrom(flag: string | undefined, env: NodeJS.ProcessEnv): string[] {
  const brokers = (flag ?? env.KAFKA_BROKERS)?.split(',').map((s) => s.trim()).filter(Boolean) ?? [];
  if (brokers.length === 0) {
    throw new QuotaflowError('USAGE', 'no Kafka brokers given', { hint: 'pass --brokers (or set KAFKA_BROKERS); `quotaflow stack up` starts a local Kafka and prints its address' });
  }
  return brokers;
}

export function wantsHelp(argv: string[]): boolean {
  return argv.includes('--help') || argv.includes('-h');
}

/**
 * Resolves when the command is asked to stop (Ctrl-C, SIGTERM). Holds the process open meanwhile:
 * services are started unref'd (they must never keep their owner alive), so without this a command
 * that only waits would simply exit, and its services with it.
 */
export function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  const keepAlive = setInterval(() => {}, 60_000);
  return new Promise<void>((resolve) => {
    signal.addEventListener('abort', () => {
      clearInterval(keepAlive);
      resolve();
    }, { once: true });
  });
}
