/** The committed JSON Schemas are exactly what the zod schemas generate; and the schemas accept real records. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { generateSchemas, SCHEMAS_DIR } from '../../ops/gen-schemas.ts';
import { BreachRecordSchema, DecisionSchema, OverrideSchema, UsageEventSchema } from '../../src/events/index.ts';

describe('schemas/*.schema.json', () => {
  for (const [file, text] of generateSchemas()) {
    test(`${file} is current`, () => {
      const path = join(SCHEMAS_DIR, file);
      assert.ok(existsSync(path), `schemas/${file} is missing: run \`npm run schemas\``);
      assert.equal(readFileSync(path, 'utf8'), text, `schemas/${file} is stale: run \`npm run schemas\` and commit the result`);
    });
  }
});

describe('event schemas', () => {
  test('usage event: admitted and refused', () => {
    const base = { schemaVersion: 1, eventTime: 1711108902000, region: 'eu-west-1', gatewayId: 'gw-1', subjects: { api_key: 'tp_1' }, api: null, cost: 1 };
    assert.ok(UsageEventSchema.safeParse({ ...base, outcome: { kind: 'admitted' } }).success);
    assert.ok(UsageEventSchema.safeParse({ ...base, outcome: { kind: 'refused', decision: { counterKey: 'k', windowMs: 60000, decidedAt: 1 } } }).success);
    assert.ok(!UsageEventSchema.safeParse({ ...base, cost: 0, outcome: { kind: 'admitted' } }).success, 'cost ≥ 1');
    assert.ok(!UsageEventSchema.safeParse({ ...base, extra: 1, outcome: { kind: 'admitted' } }).success, 'strict');
  });
  test('decision, breach record, override', () => {
    assert.ok(
      DecisionSchema.safeParse({
        schemaVersion: 1,
        counterKey: '{api_key=tp_1}:rule=per-key:api_key=tp_1',
        tenant: 'api_key=tp_1',
        rule: 'per-key',
        window: '60s',
        windowMs: 60000,
        windowKind: 'fixed',
        state: 'block',
        until: 1711108920000,
        limit: 60,
        observed: 60,
        message: 'Rate limit exceeded. Try again in 18 seconds.',
        policyVersion: '1',
        region: 'eu-west-1',
        decidedAt: 1711108902000,
      }).success,
    );
    assert.ok(
      BreachRecordSchema.safeParse({
        schemaVersion: 1,
        tenant: 't',
        counterKey: 'k',
        rule: 'r',
        window: '60s',
        windowMs: 60000,
        windowKind: 'rolling',
        limit: 60,
        firstCrossedAt: 1,
        countAtCrossing: 60,
        peakCount: 63,
        liftedAt: null,
        refused: 12,
        overshoot: 3,
        policyVersion: '1',
        region: 'r',
      }).success,
    );
    const o = { schemaVersion: 1, key: 'rule=per-key:api_key=k', rule: 'per-key', subjects: { api_key: 'k' }, setAt: 1 };
    assert.ok(OverrideSchema.safeParse({ ...o, unlimited: true }).success);
    assert.ok(OverrideSchema.safeParse({ ...o, limits: [{ limit: 300, window: '60s' }] }).success);
    assert.ok(!OverrideSchema.safeParse(o).success, 'limits or unlimited');
  });
});
