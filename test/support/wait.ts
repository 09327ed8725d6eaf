/**
 * The one way integration tests wait for something that changes without an event to await: poll a
 * check until it gives a value (anything but undefined, false or null), or fail after `timeoutMs`
 * naming what was awaited and, when the check threw, its last error. Named waits (a block on a
 * gateway, a group's commits) are built on it; there are no bare sleeps for state.
 */
export interface WaitOptions {
  timeoutMs: number;
  /** Between checks (default 25 ms). */
  everyMs?: number;
}

export async function waitFor<T>(what: string, check: () => T | Promise<T>, opts: WaitOptions): Promise<Exclude<T, undefined | false | null>> {
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false && value !== null) return value as Exclude<T, undefined | false | null>;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) {
      const why = lastError === undefined ? '' : `; the last check failed: ${lastError instanceof Error ? lastError.message : String(lastError)}`;
      throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${what}${why}`, { cause: lastError });
    }
    await new Promise((r) => setTimeout(r, opts.everyMs ?? 25));
  }
}
