/** How the gateway benchmark shows durations and counts. */

/** A count, or the mean of two middle counts (a median of an even number of them). */
export const count = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: 1 });

/** A duration given in ms, in the unit that suits it. */
export const dur = (ms: number) =>
  ms < 0.001
    ? `${Math.round(ms * 1e6)} ns`
    : ms < 1
      ? `${(ms * 1e3).toFixed(ms < 0.01 ? 2 : 1)} µs`
      : ms < 100
        ? `${ms.toFixed(1)} ms`
        : `${Math.round(ms)} ms`;

/** For times read by the 1 ms cache poll: below a millisecond is below what it can tell. */
export const polled = (ms: number) => (ms < 1 ? '< 1 ms' : dur(ms));
