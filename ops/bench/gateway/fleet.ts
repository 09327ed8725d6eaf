/**
 * What every section of the gateway benchmark works with: the services, the policy, the sizes and
 * the progress line; and the gateways and aggregators it starts, stopped when a section is done or
 * the benchmark ends.
 */
import type { Aggregator } from '../../../src/aggregator/aggregator.ts';
import type { Progress } from '../../../src/cli/ui.ts';
import { Gateway, type CheckRequest } from '../../../src/gateway/gateway.ts';
import { topicNames } from '../../../src/kafka/topics.ts';
import { logger } from '../../../src/log.ts';
import type { CompiledPolicy } from '../../../src/policy/index.ts';
import { openUsageStore, type RedisStore } from '../../../src/store/index.ts';
import { benchAggregator, startAggregator } from '../common/aggregator.ts';
import type { BenchServices } from '../common/services.ts';
import { until } from '../common/wait.ts';
import type { Sizes } from './options.ts';
import { resolved } from './policy.ts';

/** An aggregator on its own topics, which the gateways of sections 3 and 4 talk to. */
export interface Pipeline {
  prefix: string;
  aggregator: Aggregator;
  store: RedisStore;
}

export class GatewayBench {
  private readonly running: Gateway[] = [];
  private readonly pipelines: Pipeline[] = [];

  constructor(
    readonly services: BenchServices,
    readonly policy: CompiledPolicy,
    readonly sizes: Sizes,
    readonly ui: Progress,
  ) {}

  get runId(): string {
    return this.services.runId;
  }

  /** A gateway on the topics under `prefix`, given the run's Kafka settings, once its decision cache is warm. */
  async gateway(prefix: string, id: string, clock?: () => number): Promise<Gateway> {
    const gateway = new Gateway({
      policy: this.policy,
      kafka: this.services.gatewayKafka,
      topicPrefix: prefix,
      gatewayId: id,
      region: 'bench',
      clock,
      log: logger(`gateway.${id}`),
    });
    this.running.push(gateway);
    gateway.start();
    await gateway.whenWarm(60_000);
    return gateway;
  }

  /** `n` gateways on the pipeline's topics, one after the other, `label` on the progress line. */
  async gateways(n: number, pipeline: Pipeline, what: string, label?: string, clock?: () => number): Promise<Gateway[]> {
    const gateways: Gateway[] = [];
    for (let g = 0; g < n; g++) {
      if (label) this.ui.update(`${label} ${g + 1}/${n}…`);
      gateways.push(await this.gateway(pipeline.prefix, `bench-${what}-${this.runId}-${g}`, clock));
    }
    return gateways;
  }

  /** An aggregator on new topics and a new Redis prefix; `nearRatio` 0 turns near-limit shares off (section 4's baseline). */
  async pipeline(nearRatio?: number, tag = ''): Promise<Pipeline> {
    const prefix = await this.services.newTopics(`agg${tag}`);
    const store = await openUsageStore(this.services.stack.redisUrl, { keyPrefix: `${this.services.redisPrefix}agg${tag}:` });
    const aggregator = benchAggregator({
      kafka: this.services.kafka,
      store,
      policy: this.policy,
      topics: topicNames(prefix),
      groupId: this.services.group(`aggregators${tag}`),
      nearRatio,
    });
    const pipeline = { prefix, aggregator, store };
    this.pipelines.push(pipeline);
    await startAggregator(aggregator);
    return pipeline;
  }

  /**
   * Drives one key to its limit on `from` and waits until every gateway caches the block: proves the
   * aggregator and every decision feed are consuming before anything is timed.
   */
  async probe(from: Gateway, gateways: Gateway[], name: string): Promise<void> {
    const request: CheckRequest = { api: 'Tight', subjects: { api_key: `probe-${this.runId}-${name}` } };
    const r = resolved(this.policy, request);
    for (let i = 0; i < r.limits[0]!.limit; i++) from.check(request);
    await until(
      () => gateways.every((g) => g.cache.get(r.counterKey, Date.now()) !== undefined),
      60_000,
      `a probe block to reach all ${gateways.length} gateways`,
    );
  }

  async stopGateways(): Promise<void> {
    await Promise.all(this.running.splice(0).map((g) => g.stop().catch((e) => logger('bench').warn('stopping a gateway failed', { error: e }))));
  }

  /** Stops every gateway and aggregator still running. */
  async stop(): Promise<void> {
    await this.stopGateways();
    for (const p of this.pipelines.splice(0)) {
      await p.aggregator.stop().catch((e) => logger('bench').warn('stopping the aggregator failed', { error: e }));
      await p.store.close().catch(() => {});
    }
  }
}
