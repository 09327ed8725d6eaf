/**
 * A replay worker thread (started by threads.ts): folds the partitions the main thread hands it,
 * with a ReplayFold of its own, and answers `finish` with its summary.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { DEFAULT_NEAR_RATIO, decisionContext, longestWindowMs } from '../fold/context.ts';
import { compilePolicy } from '../policy/index.ts';
import { ReplayFold } from './fold.ts';
import { unpack, type FromWorker, type ToWorker, type WorkerInit } from './threads.ts';

if (!isMainThread && parentPort) {
  const port = parentPort;
  const init = workerData as WorkerInit;
  const policy = compilePolicy(init.policy);
  const fold = new ReplayFold({
    policy,
    ctx: decisionContext(policy, init.region, init.nearRatio ?? DEFAULT_NEAR_RATIO),
    longestWindowMs: longestWindowMs(policy),
    overrides: init.overrides,
    collectBreaches: init.collectBreaches,
    now: init.now,
    futureSkewMs: init.futureSkewMs,
  });
  port.on('message', (m: ToWorker) => {
    if (m.type === 'records') {
      fold.addBatch(m.partition, unpack(m));
      port.postMessage({ type: 'folded', bytes: m.bytes.byteLength } satisfies FromWorker);
    } else {
      fold.finish(m.at);
      port.postMessage({ type: 'summary', summary: fold.summary({ writes: init.writes }) } satisfies FromWorker);
    }
  });
}
