/** Reading a process's memory the same way everywhere: after full GCs, heap, ArrayBuffers and RSS. */
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Two full GCs (the second collects what the first's finalizers freed), before reading memory. A
 * process started with --expose-gc has `gc`; any other turns it on here.
 */
export function collect(): void {
  let gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
  gc();
}

export interface Memory {
  heap: number;
  /** ArrayBuffer backing stores (the counters' Float64Array rings, Kafka's Buffers): outside the heap. */
  arrayBuffers: number;
  rss: number;
}

/** The process's memory after two full GCs. */
export function memory(): Memory {
  collect();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, arrayBuffers: m.arrayBuffers, rss: m.rss };
}
