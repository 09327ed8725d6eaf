/** Shared by the gateway unit tests: a Decision as the aggregators publish it, and a clock the test moves. */
import type { Decision } from '../../../src/events/index.ts';

/** A block decision (override any field); `until` and `counterKey` are what the cache keys on. */
export function decision(fields: Partial<Decision> & Pick<Decision, 'counterKey' | 'until'>): Decision {
  return {
    schemaVersion: 1,
    tenant: 'api_key=k',
    rule: 'per-key',
    window: '60s',
    windowMs: 60_000,
    windowKind: 'fixed',
    state: 'block',
    limit: 60,
    observed: 61,
    message: 'Rate limit exceeded.',
    policyVersion: '1',
    region: 'test',
    decidedAt: fields.until - 30_000,
    ...fields,
  };
}

/** A clock for `GatewayOptions.clock` that only moves when told to. */
export class TestClock {
  constructor(public now: number) {}
  readonly read = (): number => this.now;
  set(t: number): void {
    this.now = t;
  }
  advance(ms: number): void {
    this.now += ms;
  }
}
