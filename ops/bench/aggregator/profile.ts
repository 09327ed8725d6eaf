/**
 * Where the aggregator's CPU goes: one more drain under the V8 profiler after the measured runs (not
 * counted in the figures), its self time by category and by function, and what would shrink each.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { perSec } from '../common/figures.ts';
import { ROOT } from '../common/report.ts';
import { runChild, taskBase, type AggregatorBench } from './tasks.ts';

export interface Profile {
  file: string;
  /** µs of samples between the drain's first batch and its last commit. */
  total: number;
  categories: Array<[string, number]>;
  functions: Array<[string, number]>;
}

/** What would shrink each profile category, by category prefix. */
export const LEVERS: Array<[string, string]> = [
  [
    'src/windows',
    'window counting: the running sums make a count O(1) and the full state (reset times, until, a LimitState per limit) is computed only near a limit, so what is left is RollingCounter.add per event and the full state on hot keys; a slab of rings would make add cheaper still',
  ],
  [
    'garbage collection',
    'fewer allocations per event (the LimitState objects of RollingCounter.state, the bucket field string and increment object of the fold, the decoded event itself)',
  ],
  ['src/events/decode.ts', 'decoding: JSON.parse plus zod per event; a hand-written check for the one hot layout (zod only to explain a rejected event)'],
  ['zod', 'zod safeParse per event: a hand-written check for the one hot layout, zod only to explain a rejected event'],
  [
    'src/fold',
    'the fold (a bucketMs:bucketIndex string and two Map lookups per event and bucket size): per-counter increments indexed by bucket, not by string',
  ],
  ['src/policy', 'resolve() per event: cache the resolution per (api, subjects) within a batch'],
  ['kafkajs', "kafkajs's fetch and record decoding (what the bare consumer spends too): larger batches, or a client with native decoding"],
  ['@platformatic/kafka', "@platformatic/kafka's fetch and record decoding (what the bare consumer spends too): larger batches"],
  ['ioredis', 'building and encoding the store write: fewer, flatter arguments per batch'],
  ['src/store', 'building the store write: fewer, flatter arguments per batch'],
  ['OpenTelemetry', 'the per-batch instrument calls and span (no-op without an SDK)'],
  ['Node internals', 'Buffer to string conversions and socket writes'],
];

function categoryOf(fn: string, url: string): string {
  if (fn === '(garbage collector)') return 'garbage collection';
  if (fn === '(idle)') return 'idle (waiting on Kafka / Redis)';
  if (fn === '(program)') return 'V8 and native code outside JS (program)';
  if (url.includes('/node_modules/zod/')) return 'zod (usage event validation)';
  if (url.includes('/node_modules/kafkajs/')) return 'kafkajs (fetch, record batch decoding, commits, produce)';
  if (url.includes('/node_modules/@platformatic/kafka/')) return '@platformatic/kafka (fetch, record batch decoding, commits, produce)';
  if (url.includes('/node_modules/ioredis/') || url.includes('/node_modules/redis-parser/') || url.includes('/node_modules/redis-errors/'))
    return 'ioredis (command encoding, reply parsing)';
  if (url.includes('/node_modules/@opentelemetry/')) return 'OpenTelemetry API (no-op instruments)';
  if (url.includes('/src/aggregator/decode.ts')) return 'src/aggregator/decode.ts (incl. JSON.parse, isUtf8)';
  const src = /\/src\/([^/]+)\//.exec(url);
  if (src) return `src/${src[1]}`;
  if (url.startsWith('node:')) return 'Node internals (buffers, streams, timers, sockets)';
  if (url === '') return `native: ${fn || '(anonymous)'}`;
  return 'other';
}

/** Self time in a V8 CPU profile between two process.hrtime instants (µs), by category and by function. */
function summarize(file: string, fromUs: number, toUs: number): Profile {
  interface Node {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
  }
  const p = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; startTime: number; samples: number[]; timeDeltas: number[] };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let t = p.startTime;
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    t += dt;
    if (t < fromUs || t > toUs) continue;
    const id = p.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + dt);
    total += dt;
  }
  const categories = new Map<string, number>();
  const functions = new Map<string, number>();
  for (const [id, time] of self) {
    const { functionName: fn, url, lineNumber } = byId.get(id)!.callFrame;
    const cat = categoryOf(fn, url);
    categories.set(cat, (categories.get(cat) ?? 0) + time);
    const path = url
      .replace(/^file:\/\//, '')
      .replace(ROOT + '/', '')
      .replace(/^.*node_modules\//, '');
    const where = url ? (lineNumber > 0 ? `${path}:${lineNumber + 1}` : path) : 'native';
    const name = `${fn || '(anonymous)'} (${where})`;
    functions.set(name, (functions.get(name) ?? 0) + time);
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return { file, total, categories: sorted(categories), functions: sorted(functions).slice(0, 12) };
}

/** The idle share of a profile, where the event loop waited on I/O. */
export const idleOf = (p: Profile) => p.categories.find(([c]) => c.startsWith('idle'))?.[1] ?? 0;

/** One more aggregator drain of the backlog under the profiler; its .cpuprofile stays in a temporary directory. */
export async function profiledDrain(bench: AggregatorBench, backlog: number): Promise<Profile | undefined> {
  const { services, ui } = bench;
  const dir = mkdtempSync(join(os.tmpdir(), `quotaflow-bench-aggregator-${services.runId}-`));
  const r = await runChild(
    {
      role: 'aggregator',
      ...taskBase(bench),
      redisUrl: services.stack.redisUrl,
      keyPrefix: `${services.redisPrefix}prof:`,
      topicPrefix: bench.topicPrefix,
      groupId: services.group('aggregators-profiled'),
      expected: backlog,
    },
    '[profile] aggregator under the V8 profiler (not counted)',
    ui,
    { cpuProfDir: dir },
  );
  // One profile per thread (tsx's module loader has its own, idle): keep the one that ran the drain.
  let profile: Profile | undefined;
  for (const f of readdirSync(dir)
    .filter((n) => n.endsWith('.cpuprofile'))
    .map((n) => join(dir, n))) {
    const summary = summarize(f, r.fromUs, r.toUs);
    const busyIn = (x: Profile) => x.total - idleOf(x);
    if (!profile || busyIn(summary) > busyIn(profile)) {
      if (profile) rmSync(profile.file);
      profile = summary;
    } else rmSync(f);
  }
  ui.done(`[profile] aggregator ${perSec((r.events * 1000) / r.ms)} under the profiler (not counted); profile: ${profile?.file ?? `none written in ${dir}`}`);
  return profile;
}
