/**
 * Child services (the Kafka JVM, redis-server) that must never outlive the process that started
 * them, whether it stops cleanly, throws, or is killed with SIGKILL.
 *
 * Each service runs in its own process group (so stopping it also stops anything it forked), and a
 * tiny detached reaper process watches our pid: when we are gone, however we died, it kills the
 * group. A clean `stop()` sends SIGTERM, waits, then SIGKILLs what is left.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { once } from 'node:events';

export interface ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  /** Resolves with the exit code (or signal) when the process ends, for whatever reason. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  isRunning(): boolean;
  /** SIGTERM the group, wait up to `graceMs`, then SIGKILL. Idempotent. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL the group at once (fault tests). */
  kill(): Promise<void>;
}

// Runs under `node -e`: argv = [parentPid, childPgid]. Polls rather than relying on pipes, because
// a SIGKILLed parent gives no signal to anyone.
const REAPER = `
const [parent, group] = process.argv.slice(1).map(Number);
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; } };
const tick = () => {
  if (!alive(group)) process.exit(0);
  if (!alive(parent)) { try { process.kill(-group, 'SIGKILL'); } catch {} process.exit(0); }
};
setInterval(tick, 300);
`;

export function startManaged(
  name: string,
  command: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; logFile: string },
): ManagedProcess {
  const log: WriteStream = createWriteStream(options.logFile, { flags: 'a' });
  const child: ChildProcess = spawn(command, args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    detached: true, // own process group, so the group can be signalled as a whole
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });

  let running = true;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      running = false;
      resolve({ code, signal });
    });
    child.once('error', () => {
      running = false;
      resolve({ code: null, signal: null });
    });
  });
  void exited.then(() => log.end());

  const pid = child.pid;
  if (pid === undefined) {
    // spawn failed synchronously (ENOENT is reported via 'error'); callers check prerequisites first
    return {
      name,
      pid: -1,
      logFile: options.logFile,
      exited,
      isRunning: () => false,
      stop: async () => {},
      kill: async () => {},
    };
  }
  // Do not keep our event loop alive for the child's pipes alone.
  child.unref();
  (child.stdout as unknown as { unref?: () => void } | null)?.unref?.();
  (child.stderr as unknown as { unref?: () => void } | null)?.unref?.();

  const reaper = spawn(process.execPath, ['-e', REAPER, String(process.pid), String(pid)], {
    detached: true,
    stdio: 'ignore',
  });
  reaper.unref();

  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-pid, signal);
    } catch {
      /* already gone */
    }
  };

  // The child is unref'd, so waiting for its exit must hold the event loop open itself; otherwise
  // Node can find nothing left to run and end the owner mid-wait.
  const untilExited = async () => {
    const keepAlive = setInterval(() => {}, 1_000);
    try {
      await exited;
    } finally {
      clearInterval(keepAlive);
    }
  };
  const stop = async (graceMs = 15_000) => {
    if (!running) return;
    signalGroup('SIGTERM');
    const timer = setTimeout(() => signalGroup('SIGKILL'), graceMs);
    await untilExited();
    clearTimeout(timer);
    signalGroup('SIGKILL'); // anything the service forked
  };
  const kill = async () => {
    if (!running) return;
    signalGroup('SIGKILL');
    await untilExited();
  };

  return { name, pid, logFile: options.logFile, exited, isRunning: () => running, stop, kill };
}

/** True when a process with this pid exists (zombies of ours excluded by the caller's own wait). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function waitForExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await once(child, 'exit');
}
