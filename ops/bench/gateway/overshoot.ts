/**
 * Section 4: overshoot. 8 gateways share one key's traffic at 10x its limit rate; requests admitted
 * over the limit per fixed window, counted at the gateways and beside the aggregator's breach
 * records; then the same with near-limit shares off, the same-run baseline of what they buy.
 */
import type { BreachRecord } from '../../../src/events/index.ts';
import type { CheckRequest, Gateway } from '../../../src/gateway/gateway.ts';
import { logger } from '../../../src/log.ts';
import { checkAbort } from '../common/cli.ts';
import { int, mdTable, median, type Figure } from '../common/figures.ts';
import { sleep, until } from '../common/wait.ts';
import type { DecisionSummary } from './decisions.ts';
import type { GatewayBench, Pipeline } from './fleet.ts';
import { count, dur } from './format.ts';
import type { Sizes } from './options.ts';
import { resolved } from './policy.ts';

/** Label suffix of the overshoot streams run with near-limit shares off. */
const NO_SHARE = ' (near shares off)';

interface Stream {
  label: string;
  limit: number;
  gateways: Gateway[];
  request: CheckRequest;
  counterKey: string;
  /** Requests per second, offered across its gateways. */
  rate: number;
  credit: number[];
  /** Admitted per fixed window (index floor(t / windowMs)). */
  admitted: Map<number, number>;
  refused: number;
  reasons: Map<string, number>;
}

interface OvershootSample {
  label: string;
  limit: number;
  window: number;
  admitted: number;
  overshoot: number;
  /** The aggregator's breach record for that window, if it arrived. */
  recorded: number | undefined;
}

export interface OvershootResult {
  samples: OvershootSample[];
  /** Refusals by CheckResult.reason, per stream label, over every run. */
  refusedBy: Map<string, Map<string, number>>;
}

/** A stream through one gateway, whose own count refuses at the limit. */
const solo = (label: string) => label.startsWith('1 ');

/** The last time an overshoot gateway read its clock: check() reads it once, first thing. */
let clockRead = 0;
const observedClock = () => (clockRead = Date.now());

async function overshootRun(bench: GatewayBench, pipeline: Pipeline, gateways: Gateway[], run: number, into: OvershootResult, suffix = ''): Promise<void> {
  const { sizes, ui } = bench;
  const W = sizes.windowMs;
  const stream = (label: string, limit: number, gws: Gateway[]): Stream => {
    label += suffix;
    const request: CheckRequest = { api: `Over${limit}`, subjects: { api_key: `os-${bench.runId}-${run}-${label.replace(/\W+/g, '-')}` } };
    return {
      label,
      limit,
      gateways: gws,
      request,
      counterKey: resolved(bench.policy, request).counterKey,
      rate: (sizes.loadFactor * limit * 1000) / W,
      credit: gws.map(() => 0),
      admitted: new Map(),
      refused: 0,
      reasons: new Map(),
    };
  };
  const smallest = Math.min(...sizes.overshootLimits);
  const streams = [
    ...sizes.overshootLimits.map((l) => stream(`${gateways.length} gateways, limit ${l}`, l, gateways)),
    stream(`1 gateway, limit ${smallest}`, smallest, [gateways[0]!]),
  ];
  const keys = new Set(streams.map((s) => s.counterKey));
  const breaches: BreachRecord[] = [];
  const onBreach = (b: BreachRecord) => {
    if (b.liftedAt !== null && keys.has(b.counterKey)) breaches.push(b);
  };
  pipeline.aggregator.on('breach', onBreach);
  // Start on a window boundary so every window measured is whole.
  const start = Math.ceil((Date.now() + 50) / W) * W;
  const end = start + sizes.windowsPerRun * W;
  try {
    while (Date.now() < start) {
      checkAbort();
      ui.update(`[4/4] overshoot, run ${run + 1}/${sizes.runs}: waiting ${((start - Date.now()) / 1000).toFixed(1)} s for a window boundary`);
      await sleep(Math.min(100, Math.max(1, start - Date.now())));
    }
    let last = Date.now();
    let lastUi = 0;
    while (Date.now() < end) {
      checkAbort();
      await sleep(2);
      const now = Date.now();
      const dt = Math.min(now, end) - last;
      last = now;
      for (const s of streams) {
        const share = (s.rate * dt) / 1000 / s.gateways.length;
        for (let g = 0; g < s.gateways.length; g++) {
          s.credit[g]! += share;
          while (s.credit[g]! >= 1) {
            s.credit[g]! -= 1;
            if (Date.now() >= end) break;
            const r = s.gateways[g]!.check(s.request);
            if (r.allowed) {
              const w = Math.floor(clockRead / W); // the time check() decided at, so the window the gateway counted it in
              s.admitted.set(w, (s.admitted.get(w) ?? 0) + 1);
            } else {
              s.refused++;
              s.reasons.set(r.reason, (s.reasons.get(r.reason) ?? 0) + 1);
            }
          }
        }
      }
      if (now - lastUi > 250) {
        lastUi = now;
        const w = Math.floor(now / W);
        ui.update(
          `[4/4] overshoot, run ${run + 1}/${sizes.runs}: window ${w - start / W + 1}/${sizes.windowsPerRun}, ${((end - now) / 1000).toFixed(1)} s left; admitted this window: ${streams.map((s) => `${s.admitted.get(w) ?? 0}/${s.limit}`).join(', ')}`,
        );
      }
    }
    // Each window's breach closes when its block lapses at the window's end (aggregator tick).
    const expected = streams.reduce((n, s) => n + [...s.admitted.values()].filter((a) => a >= s.limit).length, 0);
    await until(() => breaches.length >= expected, 10_000, 'the breach records of every window').catch((e: Error) => {
      logger('bench').warn('not every breach record arrived; reporting the counts made at the gateways only', { error: e, expected, got: breaches.length });
    });
  } finally {
    pipeline.aggregator.off('breach', onBreach);
  }
  for (const s of streams) {
    // With shares off, one gateway's own count says nothing new: it ran only so the load is the same.
    if (suffix === NO_SHARE && solo(s.label)) continue;
    for (let w = start / W; w < end / W; w++) {
      const admitted = s.admitted.get(w) ?? 0;
      const b = breaches.find((x) => x.counterKey === s.counterKey && Math.floor(x.firstCrossedAt / W) === w);
      into.samples.push({ label: s.label, limit: s.limit, window: w, admitted, overshoot: Math.max(0, admitted - s.limit), recorded: b?.overshoot });
    }
    const reasons = into.refusedBy.get(s.label) ?? into.refusedBy.set(s.label, new Map()).get(s.label)!;
    for (const [reason, n] of s.reasons) reasons.set(reason, (reasons.get(reason) ?? 0) + n);
  }
}

/** The runs on section 3's aggregator, then on one that publishes no near snapshots. */
export async function measureOvershoot(bench: GatewayBench, pipeline: Pipeline): Promise<OvershootResult> {
  const { sizes, ui } = bench;
  const result: OvershootResult = { samples: [], refusedBy: new Map() };
  checkAbort();
  const gateways = await bench.gateways(sizes.overshootGateways, pipeline, 'os', '[4/4] starting the gateways:', observedClock);
  ui.update('[4/4] probing: one block through the aggregator to every gateway…');
  await bench.probe(gateways[0]!, gateways, 'os');
  for (let run = 0; run < sizes.runs; run++) await overshootRun(bench, pipeline, gateways, run, result);
  await bench.stopGateways();
  ui.update('[4/4] starting an aggregator with near-limit shares off, and its gateways…');
  const noShares = await bench.pipeline(0, '-noshare');
  const baseline = await bench.gateways(sizes.overshootGateways, noShares, 'os0', undefined, observedClock);
  await bench.probe(baseline[0]!, baseline, 'os0');
  for (let run = 0; run < sizes.runs; run++) await overshootRun(bench, noShares, baseline, run, result, NO_SHARE);
  await bench.stopGateways();
  return result;
}

/** The streams measured, in the order they ran. */
const labels = (o: OvershootResult) => [...new Set(o.samples.map((s) => s.label))];

export function overshootFigures(o: OvershootResult, sizes: Sizes): Figure[] {
  const section = `4. overshoot, ${sizes.loadFactor}x the limit rate`;
  return labels(o).flatMap((label): Figure[] => {
    const xs = o.samples.filter((s) => s.label === label);
    const limit = xs[0]!.limit;
    const recorded = xs.map((s) => s.recorded).filter((x): x is number => x !== undefined);
    const agree = xs.filter((s) => s.recorded === s.overshoot).length;
    const name = `${label}/${sizes.windowMs / 1000}s (${int((sizes.loadFactor * limit * 1000) / sizes.windowMs)} req/s)`;
    const share = (n: number) => `${count(n)} (${((100 * n) / limit).toFixed(1)}%)`;
    const reasons = [...(o.refusedBy.get(label) ?? new Map<string, number>())]
      .sort((x, y) => y[1] - x[1])
      .map(([r, n]) => `${r} ${int(n)}`)
      .join(', ');
    return [
      {
        section,
        name: `${name}: over the limit per window`,
        values: xs.map((s) => s.overshoot),
        fmt: share,
        vs: recorded.length
          ? `aggregator's breach records: ${count(median(recorded))} (over the ${recorded.length} of ${xs.length} windows that reached the limit; equal to the gateways' count in ${agree})`
          : xs.every((s) => s.admitted < limit)
            ? 'no breach record: the count stayed under the limit'
            : "aggregator's breach records: none arrived",
      },
      {
        section,
        name: `${name}: admitted per window`,
        values: xs.map((s) => s.admitted),
        fmt: share,
        vs: `refused: ${reasons || 'none'}`,
      },
    ];
  });
}

export function overshootReport(o: OvershootResult, d: DecisionSummary, figures: readonly Figure[], sizes: Sizes): string[] {
  const rateOf = (limit: number) => (sizes.loadFactor * limit * 1000) / sizes.windowMs;
  const overOf = (limit: number, f: (label: string) => boolean) =>
    median(o.samples.filter((s) => s.limit === limit && !solo(s.label) && f(s.label)).map((s) => s.overshoot));
  const shared = (label: string) => !label.endsWith(NO_SHARE);
  const early = (label: string) => [...(o.refusedBy.get(label) ?? new Map<string, number>())].filter(([r]) => r !== 'blocked' && r !== 'local-limit');
  const shareRefusals = [...o.refusedBy.keys()].filter((label) => !solo(label)).flatMap(early);
  const dominates = sizes.overshootLimits
    .map((l) => {
      const label = labels(o).find((x) => !solo(x) && o.samples.some((s) => s.label === x && s.limit === l))!;
      const admitted = median(o.samples.filter((s) => s.label === label).map((s) => s.admitted));
      const over = overOf(l, () => true);
      if (over === 0 && early(label).reduce((n, [, c]) => n + c, 0) > 0)
        return `at limit ${l} the gateways' own shares of a near-limit snapshot stopped them at ${count(admitted)} before a block was needed`;
      return `at limit ${l}, ${int(rateOf(l))} req/s × ${dur(d.p50)} (section 3's p50, on a quiet pipeline) ≈ ${((rateOf(l) * d.p50) / 1000).toFixed(1)} expected, ${count(over)} measured — as if the block took ${dur((over / rateOf(l)) * 1000)} to reach every gateway under this load`;
    })
    .join('; ');
  return [
    `## 4. Overshoot (${sizes.overshootGateways} gateways, ${sizes.loadFactor}x the limit rate at one key)`,
    '',
    `${sizes.overshootGateways} Gateway instances share one key's traffic equally, together ${sizes.loadFactor}x the limit rate, for ${sizes.windowsPerRun} whole fixed windows of ${sizes.windowMs / 1000} s per run (a new key each run), with the aggregator and Redis of section 3. ` +
      "Overshoot = requests admitted in a window minus the limit, counted at the gateways from every check result (by the window of its time); the aggregator's closed breach records (quota.audit, `overshoot`) for the same windows are shown beside it as a cross-check. " +
      `"1 gateway" sends the same rate through one gateway, whose own count refuses at the limit. An Envoy-style counter would show ~0 overshoot here, at the cost of a Redis round trip per request (section 2); only ours is reported.`,
    '',
    ...mdTable(figures),
    '',
    `What dominates: the requests admitted while the block travels to the gateways (offered rate × decision latency): ${dominates}; with one gateway, its own count keeps it at ${count(median(o.samples.filter((x) => solo(x.label)).map((x) => x.overshoot)))}.`,
    '',
    `Near-limit shares, same run: ${sizes.overshootLimits.map((l) => `limit ${l}: ${count(overOf(l, shared))} over per window with them, ${count(overOf(l, (x) => !shared(x)))} without`).join('; ')} (median; the "${NO_SHARE.trim()}" rows use an aggregator that publishes no near snapshots).`,
    '',
    `What would make it smaller: a shorter decision path (section 3, where ${d.dominant[0].replace(/ \(.*\)$/, '')} took the most)${shareRefusals.length ? '' : ', or each gateway spending only its share of the room left once a key nears its limit'}.`,
    '',
  ];
}
