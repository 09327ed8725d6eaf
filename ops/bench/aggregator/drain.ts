/** What both drains (the bare consumer's and the Aggregator's) measure the same way, in their child process. */
import type { GroupConsumerOptions } from '../../../src/kafka/port.ts';
import type { ChildMessage } from './tasks.ts';

/** The Aggregator's own consumer defaults (src/aggregator/aggregator.ts), which the bare consumer copies. */
export const PARTITIONS_CONCURRENTLY = 3;
export const CONSUMER_SETTINGS: Omit<GroupConsumerOptions, 'groupId'> = {
  sessionTimeoutMs: 30_000,
  heartbeatIntervalMs: 3_000,
  maxBytesPerPartition: 4 * 1024 * 1024,
};

export const DRAIN_TIMEOUT_MS = 15 * 60_000;

const hrUs = () => Number(process.hrtime.bigint() / 1000n);

/** The measured interval: from the first batch handed to the code (wall time, hrtime, CPU) to `end()`. */
export class DrainClock {
  firstAt: number | undefined;
  private fromUs = 0;
  private cpu0 = process.cpuUsage();

  /** Called on every batch; only the first one starts the clock. */
  start(): void {
    if (this.firstAt !== undefined) return;
    this.firstAt = performance.now();
    this.fromUs = hrUs();
    this.cpu0 = process.cpuUsage();
  }

  end(): { cpuMs: number; fromUs: number; toUs: number } {
    const cpu = process.cpuUsage(this.cpu0);
    return { cpuMs: (cpu.user + cpu.system) / 1000, fromUs: this.fromUs, toUs: hrUs() };
  }
}

/** Resolves once `done` is called; rejects on abort, on `fail`, or after `timeoutMs` saying `what()` was not reached. */
export function finishLine(signal: AbortSignal, timeoutMs: number, what: () => string) {
  let resolveDone!: () => void;
  let rejectDone!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  const timer = setTimeout(() => rejectDone(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what()}`)), timeoutMs);
  signal.addEventListener('abort', () => rejectDone(new Error('stopped')), { once: true });
  void promise.finally(() => clearTimeout(timer)).catch(() => {});
  return { promise, done: resolveDone, fail: rejectDone };
}

/** Tells the parent how far the drain is, every 250 ms. */
export function reportProgress(done: () => number, clock: DrainClock): NodeJS.Timeout {
  const timer = setInterval(() => {
    const f = clock.firstAt;
    process.send?.({ type: 'progress', done: done(), ms: f === undefined ? 0 : performance.now() - f } satisfies ChildMessage);
  }, 250);
  timer.unref();
  return timer;
}
