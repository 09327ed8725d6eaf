/**
 * Aggregator benchmark on real services: one Aggregator draining a backlog of usage events from
 * Kafka into Redis, against a bare consumer of the same Kafka client draining the same backlog in the
 * same run, and `quotaflow replay` (--dry-run and --rebuild) reading that backlog again; then its
 * memory per counter at 100,000 and 1,000,000 counters. Each drain runs in a fresh child process
 * (child.ts: its own heap, RSS and JIT), with a fresh consumer group (and, for the aggregator, a
 * fresh Redis key prefix, so it starts empty). Writes ops/bench/results/aggregator.md.
 * Run: npx tsx ops/bench/aggregator/main.ts [--quick]
 */
import { progress } from '../../../src/cli/ui.ts';
import { compilePolicy, parsePolicyText } from '../../../src/policy/index.ts';
import { configureBenchLogging, runMain, stopOnCtrlC } from '../common/cli.ts';
import { consoleTable } from '../common/figures.ts';
import { elapsedS, generatedLine, machineLine, runInfo, writeReport } from '../common/report.ts';
import { BenchServices } from '../common/services.ts';
import { policyText, setUpBacklog, setupReport, shapeOf } from './backlog.ts';
import { counterBytes } from './counters.ts';
import { measureMemory, memoryFigures, memoryReport, smallerAdvice } from './memory.ts';
import { parseOptions } from './options.ts';
import { profiledDrain } from './profile.ts';
import { replayReport } from './replay.ts';
import { fasterAdvice, stageCosts, stagesReport, stageTables } from './stages.ts';
import { interruptChild, stopChild, type AggregatorBench } from './tasks.ts';
import { drainRuns, throughputFigures, throughputReport } from './throughput.ts';

async function main(): Promise<number> {
  const info = runInfo(import.meta.url);
  const options = parseOptions();
  if (typeof options === 'number') return options;
  const { sizes, client, outFile } = options;
  const logLevel = configureBenchLogging();
  stopOnCtrlC(interruptChild);
  const ui = progress();
  const shape = shapeOf(sizes);
  const text = policyText(shape);
  const policy = compilePolicy(parsePolicyText(text, 'aggregator-bench.yaml'));
  const services = await BenchServices.start(client, ui);
  try {
    const bench: AggregatorBench = { services, sizes, shape, policyText: text, policy, topicPrefix: await services.newTopics('agg'), ui, logLevel };
    const { produced, backlog, records } = await setUpBacklog(bench);
    const runs = await drainRuns(bench, backlog, records);
    const profile = options.cpuProf ? await profiledDrain(bench, backlog) : undefined;
    const memory = await measureMemory(bench);
    ui.update('per-event steps in this process (JSON.parse, decode, resolve)…');
    const stages = stageCosts(bench, produced.start);
    const alone = await counterBytes(policy, sizes.keys, services.runId, true);
    ui.done();

    const figures = throughputFigures(runs, alone, bench, backlog / records);
    const memFigures = memoryFigures(memory);
    process.stdout.write(`\n${consoleTable(figures, ['figure', 'vs baseline'])}\n\n`);
    if (memFigures.length) process.stdout.write(`${consoleTable(memFigures, ['memory at scale', 'note'])}\n\n`);
    process.stdout.write(stageTables(stages, profile));
    const faster = fasterAdvice(runs, stages, profile);
    const smaller = smallerAdvice(memory, runs, alone, bench);
    const runsNote = sizes.runs > 1 ? ', with min – max over the runs' : ' (no spread with one run: use --runs)';
    const memoryRunsNote = memory.length
      ? `; the memory section's, of ${sizes.memoryRuns} run(s) per size drained through an Aggregator${memory.some((x) => !x.drains.length) ? ` and ${sizes.aloneRuns} per larger size` : ''}`
      : '';
    const report = [
      '# Aggregator benchmark',
      '',
      `${generatedLine(info)} Every throughput figure is the median of ${sizes.runs} run(s)${runsNote}${memoryRunsNote}; the ratio is taken within each run.`,
      '',
      machineLine(info, services),
      '',
      ...setupReport(produced, backlog, sizes, shape),
      ...throughputReport(runs, figures, bench, backlog),
      ...stagesReport(runs, stages, profile, faster, backlog),
      ...replayReport(
        runs.map((r) => r.dryRun),
        runs.map((r) => r.dryRunOneThread),
        backlog,
      ),
      ...memoryReport(memory, memFigures, smaller, bench),
    ];
    const shown = writeReport(outFile, report);
    process.stdout.write(
      `What would make it faster: ${faster}\n\nWhat would make it smaller: ${smaller}\n\nWrote ${shown} (${elapsedS(info).toFixed(0)} s).\n`,
    );
    return 0;
  } finally {
    ui.update('stopping the consumers and the services…');
    await stopChild();
    await services.stop();
    ui.done();
  }
}

runMain('aggregator', main);
