/** Waiting in a benchmark: on a condition or a promise, with a deadline that says what did not happen. */
import { checkAbort } from './cli.ts';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits until `done()` holds, polling every `everyMs`; throws with `what` after `timeoutMs`, or on Ctrl-C. */
export async function until(done: () => boolean, timeoutMs: number, what: string, everyMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    checkAbort();
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** `promise`, or a rejection saying `what` did not happen within `timeoutMs`. */
export async function within<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} within ${timeoutMs / 1000} s`)), timeoutMs))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
