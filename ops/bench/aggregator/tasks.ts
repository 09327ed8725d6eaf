/**
 * What the aggregator benchmark's sections share: its context, and the tasks it hands to child
 * processes (each drain in a fresh process: its own heap, RSS and JIT), with their results.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Progress } from '../../../src/cli/ui.ts';
import type { KafkaClientName } from '../../../src/kafka/port.ts';
import type { Level } from '../../../src/log.ts';
import type { CompiledPolicy } from '../../../src/policy/index.ts';
import { checkAbort } from '../common/cli.ts';
import { int, perSec } from '../common/figures.ts';
import type { Memory } from '../common/memory.ts';
import type { BenchServices } from '../common/services.ts';
import { sleep } from '../common/wait.ts';
import type { Shape } from './backlog.ts';
import type { CounterBytes } from './counters.ts';
import type { Sizes } from './options.ts';

/** What every section of the aggregator benchmark works with. */
export interface AggregatorBench {
  services: BenchServices;
  sizes: Sizes;
  shape: Shape;
  /** The policy, as text for the children and compiled for this process. */
  policyText: string;
  policy: CompiledPolicy;
  /** The throughput backlog's topics. */
  topicPrefix: string;
  ui: Progress;
  logLevel: Level | 'silent';
}

/** What every task carries. */
interface TaskBase {
  brokers: string[];
  /** The client library every Kafka consumer and producer of the child uses. */
  client: KafkaClientName;
  policyText: string;
  logLevel: Level | 'silent';
}

export const taskBase = (bench: AggregatorBench): TaskBase => ({
  brokers: bench.services.stack.brokers,
  client: bench.services.client,
  policyText: bench.policyText,
  logLevel: bench.logLevel,
});

export interface BaselineTask extends TaskBase {
  role: 'baseline';
  topic: string;
  groupId: string;
  expected: number;
}

export interface AggregatorTask extends TaskBase {
  role: 'aggregator';
  redisUrl: string;
  keyPrefix: string;
  topicPrefix: string;
  groupId: string;
  expected: number;
}

/** Builds `n` counters in the child's own heap, without Kafka or Redis (see counters.ts). */
export interface CountersTask extends TaskBase {
  role: 'counters';
  n: number;
  /** Also measure n bare RollingCounters. */
  withRings: boolean;
  runId: string;
}

/** `quotaflow replay` over the same backlog: the fold alone (--dry-run), or the fold then the write into an empty Redis prefix (--rebuild). */
export interface ReplayTask extends TaskBase {
  role: 'replay';
  mode: 'dry-run' | 'rebuild';
  redisUrl: string;
  keyPrefix: string;
  topicPrefix: string;
  expected: number;
  /** Worker threads that fold (`--workers`); undefined: the command's default, one per core. */
  workers?: number;
}

export type Task = BaselineTask | AggregatorTask | CountersTask | ReplayTask;

export interface ReplayBench {
  events: number;
  /** From the start of the replay (plan, consumer join included) to the end of the fold, and of the write. */
  foldMs: number;
  writeMs: number;
  counters: number;
  cpuMs: number;
  /** Worker threads that folded (0: the main thread). */
  workers: number;
}

export interface AggregatorFigures {
  batches: number;
  storeRoundTrips: number;
  loads: number;
  applies: number;
  /** Meta-only writes (the lapse timer's: fence unchanged, no increments), not tied to a batch. */
  metaWrites: number;
  loadMs: number;
  applyMs: number;
  counted: number;
  decisions: number;
  breachRecords: number;
  late: number;
  dlq: number;
  conflicts: number;
  skippedBelowFence: number;
  storeFailures: number;
  /** Events decoded, including batches not (yet) committed. */
  consumed: number;
  crashes: number;
}

export interface DrainResult {
  /** Events counted and committed (baseline), or committed (aggregator). */
  events: number;
  /** First batch handed to the code → the last event counted / committed. */
  ms: number;
  batches: number;
  /** CPU time of the process over the same interval (user + system). */
  cpuMs: number;
  /** Process memory before the consumer starts and after the drain (both after two GCs). */
  before: Memory;
  after: Memory;
  /** Heap + ArrayBuffers freed when the stopped Aggregator's per-partition state (counters, tenants) is dropped. */
  retained?: number;
  /** process.hrtime of the interval, µs (matches a V8 CPU profile's clock). */
  fromUs: number;
  toUs: number;
  agg?: AggregatorFigures;
}

export type ChildResult = DrainResult | CounterBytes | ReplayBench;
export type ChildMessage = { type: 'progress'; done: number; ms: number } | { type: 'result'; result: ChildResult } | { type: 'error'; message: string };

const CHILD = fileURLToPath(new URL('./child.ts', import.meta.url));
let running: ChildProcess | undefined;

export interface ChildOptions {
  /** Run it under the V8 profiler, writing its .cpuprofile here. */
  cpuProfDir?: string;
  /** A larger heap limit than V8's default (about 4 GiB here), for a million counters and their garbage. */
  maxOldSpaceMb?: number;
}

/** Runs one task in a child process, showing a drain's progress. */
export function runChild(task: BaselineTask | AggregatorTask, label: string, ui: Progress, options?: ChildOptions): Promise<DrainResult>;
export function runChild(task: CountersTask, label: string, ui: Progress, options?: ChildOptions): Promise<CounterBytes>;
export function runChild(task: ReplayTask, label: string, ui: Progress, options?: ChildOptions): Promise<ReplayBench>;
export function runChild(task: Task, label: string, ui: Progress, options: ChildOptions = {}): Promise<ChildResult> {
  checkAbort();
  const { cpuProfDir, maxOldSpaceMb } = options;
  const execArgv = [
    ...process.execArgv,
    '--expose-gc',
    ...(cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []),
    ...(maxOldSpaceMb ? [`--max-old-space-size=${maxOldSpaceMb}`] : []),
  ];
  const c = fork(CHILD, [], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  running = c;
  ui.update(`${label}…`);
  return new Promise<ChildResult>((resolveRun, rejectRun) => {
    let result: ChildResult | undefined;
    let failure: string | undefined;
    c.on('message', (raw) => {
      const m = raw as ChildMessage;
      if (m.type === 'progress') {
        const r = m.ms > 0 ? `, ${perSec((m.done * 1000) / m.ms)}` : '';
        ui.update(`${label}: ${int(m.done)} / ${int(task.role === 'counters' ? task.n : task.expected)} events${r}`);
      } else if (m.type === 'result') result = m.result;
      else failure = m.message;
    });
    c.on('error', rejectRun);
    c.on('exit', (code, signal) => {
      if (running === c) running = undefined;
      if (result && code === 0) resolveRun(result);
      else rejectRun(new Error(`${label} failed (exit ${code ?? signal})${failure ? `: ${failure}` : ''}`));
    });
    c.send(task);
  });
}

/** Asks the child running now (Ctrl-C) to stop its consumer and exit. */
export const interruptChild = () => running?.kill('SIGTERM');

/** Stops the child still running, if any: SIGTERM, then SIGKILL after 15 s. */
export async function stopChild(): Promise<void> {
  const c = running;
  if (!c) return;
  c.kill('SIGTERM');
  await Promise.race([new Promise((r) => c.once('exit', r)), sleep(15_000)]);
  if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
