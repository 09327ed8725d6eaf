/**
 * A CLI command: `quotaflow <name> ...`. Each command lives in its own file under src/cli/, is
 * declared with defineCommand (src/cli/define.ts) and listed once in src/cli/main.ts. `run` returns
 * the process exit code; it throws QuotaflowError for failures the user can act on (main prints
 * them and exits with EXIT.USAGE, EXIT.ENVIRONMENT or EXIT.FAILURE).
 */

export interface Command {
  name: string;
  /** One line for `quotaflow --help`. */
  summary: string;
  /** The full `quotaflow <name> --help` text, with examples. */
  help: string;
  /** The examples of `help`, each exactly as a user would type it. */
  examples: readonly string[];
  /** Reads a command line against the declaration without running anything; a USAGE error if it is wrong. */
  read(argv: string[]): ReadLine;
  run(argv: string[], io: CommandIO): Promise<number>;
}

/** What a command line asks for: the help, the version, or a run with these flags and arguments. */
export type ReadLine =
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'run'; values: Record<string, unknown>; subcommand: string | undefined; operands: string[] };

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

/**
 * Resolves when the command is asked to stop (Ctrl-C, SIGTERM). Holds the process open meanwhile:
 * services are started unref'd (they must never keep their owner alive), so without this a command
 * that only waits would simply exit, and its services with it.
 */
export function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  const keepAlive = setInterval(() => {}, 60_000);
  return new Promise<void>((resolve) => {
    signal.addEventListener(
      'abort',
      () => {
        clearInterval(keepAlive);
        resolve();
      },
      { once: true },
    );
  });
}
