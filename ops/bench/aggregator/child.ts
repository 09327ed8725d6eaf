/**
 * A child process of the aggregator benchmark: one task from the parent (a drain, a replay, or
 * counters built alone), its result back, then exit. A fresh process per task: its own heap, RSS and JIT.
 */
import { configureLogging } from '../../../src/log.ts';
import { compilePolicy, parsePolicyText } from '../../../src/policy/index.ts';
import { drainAggregator } from './aggregator-drain.ts';
import { drainBareConsumer } from './bare-consumer.ts';
import { counterBytes } from './counters.ts';
import { runReplay } from './replay.ts';
import type { ChildMessage, ChildResult, Task } from './tasks.ts';

function run(task: Task, signal: AbortSignal): Promise<ChildResult> {
  switch (task.role) {
    case 'baseline':
      return drainBareConsumer(task, signal);
    case 'aggregator':
      return drainAggregator(task, signal);
    case 'replay':
      return runReplay(task, signal);
    case 'counters':
      return counterBytes(compilePolicy(parsePolicyText(task.policyText, 'aggregator-bench.yaml')), task.n, task.runId, task.withRings);
  }
}

async function child(): Promise<void> {
  const task = await new Promise<Task>((r) => process.once('message', (m) => r(m as Task)));
  configureLogging({ level: task.logLevel, format: 'pretty' });
  const abort = new AbortController();
  // A drain stops its consumer on a signal; building counters (one synchronous loop) holds nothing
  // to clean up, so there a signal ends the process at once.
  if (task.role !== 'counters') for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => abort.abort());
  process.once('disconnect', () => (task.role === 'counters' ? process.exit(1) : abort.abort()));
  let message: ChildMessage;
  try {
    message = { type: 'result', result: await run(task, abort.signal) };
  } catch (e) {
    message = { type: 'error', message: e instanceof Error ? (e.stack ?? e.message) : String(e) };
  }
  if (process.connected) await new Promise<void>((r) => process.send!(message, () => r()));
  process.exit(message.type === 'result' ? 0 : 1);
}

void child();
