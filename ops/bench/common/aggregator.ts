/** An Aggregator as the benchmarks run one: the product's own, with the defaults it ships with. */
import { Aggregator, type AggregatorOptions } from '../../../src/aggregator/aggregator.ts';
import { logger } from '../../../src/log.ts';
import { within } from './wait.ts';

export function benchAggregator(opts: Omit<AggregatorOptions, 'region' | 'log'>): Aggregator {
  return new Aggregator({ ...opts, region: 'bench', log: logger('aggregator') });
}

/** Starts it and waits until it owns partitions, so nothing is timed before it consumes. */
export async function startAggregator(aggregator: Aggregator): Promise<void> {
  const assigned = new Promise<void>((r) => aggregator.once('assigned', () => r()));
  await aggregator.start();
  await within(assigned, 30_000, 'the aggregator did not join its consumer group');
}
