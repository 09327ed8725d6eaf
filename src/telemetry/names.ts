/**
 * Every metric and span name and attribute key quotaflow emits, in one place (dashboards and alerts
 * are written against these). Libraries take meters and tracers from the global @opentelemetry/api;
 * only entry points install an SDK.
 */
export const METER = 'quotaflow';
export const TRACER = 'quotaflow';

export const METRIC = {
  aggregatorEvents: 'quotaflow.aggregator.events',
  aggregatorLate: 'quotaflow.aggregator.late_events',
  aggregatorDlq: 'quotaflow.aggregator.dlq',
  aggregatorCountersTouched: 'quotaflow.aggregator.counters_touched',
  aggregatorBatchLatency: 'quotaflow.aggregator.batch.duration',
  aggregatorRedisLatency: 'quotaflow.aggregator.redis.duration',
  aggregatorRedisFailures: 'quotaflow.aggregator.redis.failures',
  aggregatorDecisions: 'quotaflow.aggregator.decisions',
  aggregatorBreaches: 'quotaflow.aggregator.breaches',
  aggregatorRollups: 'quotaflow.aggregator.rollups',
  aggregatorOvershoot: 'quotaflow.aggregator.overshoot',
  aggregatorLag: 'quotaflow.aggregator.consumer_lag',
  aggregatorCounters: 'quotaflow.aggregator.counters_in_memory',
  gatewayChecks: 'quotaflow.gateway.checks',
  gatewayRefusals: 'quotaflow.gateway.refusals',
  gatewayDecisionLag: 'quotaflow.gateway.decision_lag',
  gatewayCacheSize: 'quotaflow.gateway.cached_blocks',
  gatewayBufferDepth: 'quotaflow.gateway.buffered_events',
  gatewayDrops: 'quotaflow.gateway.dropped_events',
} as const;

export const ATTR = {
  partition: 'quotaflow.partition',
  outcome: 'quotaflow.outcome',
  reason: 'quotaflow.reason',
  rule: 'quotaflow.rule',
  state: 'quotaflow.state',
  region: 'quotaflow.region',
} as const;

export const SPAN = {
  aggregatorBatch: 'quotaflow.aggregator.batch',
} as const;
