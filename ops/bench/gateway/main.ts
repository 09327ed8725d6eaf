/**
 * Gateway benchmark on the real components (Gateway, DecisionCache, Aggregator, a real Kafka broker
 * and Redis), each figure the median of several runs with its spread, beside a baseline measured in
 * the same run. Writes ops/bench/results/gateway.md. Run: npx tsx ops/bench/gateway/main.ts [--quick]
 *
 *   1. check() throughput on one core (checks.ts);
 *   2. peers on the same Redis, taking turns with section 1 (peers.ts);
 *   3. decision latency: the crossing check on one gateway → a block in the cache of every gateway (decisions.ts);
 *   4. overshoot: 8 gateways at 10x a key's limit rate, admitted requests over the limit per window (overshoot.ts).
 */
import { progress } from '../../../src/cli/ui.ts';
import { startTelemetry } from '../../../src/telemetry/sdk.ts';
import { configureBenchLogging, checkAbort, runMain, stopOnCtrlC } from '../common/cli.ts';
import { consoleTable } from '../common/figures.ts';
import { elapsedS, generatedLine, machineLine, runInfo, writeReport } from '../common/report.ts';
import { BenchServices } from '../common/services.ts';
import { checksFigures, checksReport, startChecks } from './checks.ts';
import { decisionFigures, decisionReport, decisionSummary, measureDecisions } from './decisions.ts';
import { GatewayBench } from './fleet.ts';
import { parseOptions } from './options.ts';
import { measureOvershoot, overshootFigures, overshootReport } from './overshoot.ts';
import { PeerSummary, peersFigures, peersReport, peersRun } from './peers.ts';
import { benchPolicy } from './policy.ts';

async function main(): Promise<number> {
  const info = runInfo(import.meta.url);
  const options = parseOptions();
  if (typeof options === 'number') return options;
  const { sizes, client, outFile } = options;
  configureBenchLogging();
  stopOnCtrlC();
  const ui = progress();
  // The OpenTelemetry SDK registered as `quotaflow gateway` registers it (a Prometheus endpoint on a
  // free port): every gateway below records its metrics into it, as in production.
  const telemetry = await startTelemetry({ service: 'quotaflow-bench-gateway', metricsPort: 0 });
  const services = await BenchServices.start(client, ui);
  const bench = new GatewayBench(services, benchPolicy(sizes), sizes, ui);
  try {
    // 1 and 2 take turns within each run, so a drift in the machine's load falls on both.
    const checks = await startChecks(bench);
    const peerRuns = [];
    for (let r = 0; r < sizes.runs; r++) {
      await checks.run(r);
      peerRuns.push(await peersRun(bench, r));
    }
    await bench.stopGateways();
    const peers = new PeerSummary(peerRuns, sizes.concurrencies);
    checkAbort();
    const decisions = await measureDecisions(bench);
    const overshoot = await measureOvershoot(bench, decisions.pipeline);

    ui.done();
    const figures = [
      checksFigures(checks.result, peers),
      peersFigures(peers, checks.result, sizes),
      decisionFigures(decisions.runs, sizes),
      overshootFigures(overshoot, sizes),
    ] as const;
    process.stdout.write(`${consoleTable(figures.flat(), ['figure', 'vs baseline / note'], true)}\n\n`);
    const d = decisionSummary(decisions.runs);
    const report = [
      '# Gateway benchmark',
      '',
      `${generatedLine(info)} The OpenTelemetry SDK is registered, with a Prometheus exporter, as \`quotaflow gateway\` runs it. Every figure is the median of ${sizes.runs} run(s)${sizes.runs > 1 ? ' with min – max over the runs' : ' (one run: no spread; the default is 3 runs)'}; overshoot pools every window of every run. Each baseline is measured in the same run, on the same machine and services.`,
      '',
      machineLine(info, services),
      '',
      ...checksReport(checks.result, figures[0], sizes, client),
      ...peersReport(peers, checks.result, figures[1], sizes),
      ...decisionReport(d, figures[2], sizes, client),
      ...overshootReport(overshoot, d, figures[3], sizes),
    ];
    process.stdout.write(`Wrote ${writeReport(outFile, report)} (${elapsedS(info).toFixed(0)} s).\n`);
    return 0;
  } finally {
    ui.update('stopping the gateways, the aggregator and the services…');
    await bench.stop();
    await services.stop();
    await telemetry.shutdown();
    ui.done();
  }
}

runMain('gateway', main);
