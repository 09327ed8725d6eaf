/** The rollup record (src/events/rollup.ts): its key, its codec, and the reader's newest-wins rule. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeRollup, encodeRollup, isNewerTotal, rollupKey, type Rollup } from '../../src/events/index.ts';

const rollup: Rollup = {
  schemaVersion: 1,
  region: 'east',
  counterKey: '{api_key=tp:1}:rule=per-key:api_key=tp:1',
  tenant: 'api_key=tp:1',
  bucketMs: 1_000,
  bucketIndex: 1_795_507_200,
  total: 42,
  publishedAt: 1_795_507_200_500,
};

describe('rollup record', () => {
  test('round trip, and a key whose leading numbers parse back whatever the counter key holds', () => {
    const decoded = decodeRollup(Buffer.from(encodeRollup(rollup)));
    assert.deepEqual(decoded, { ok: true, rollup });
    const key = rollupKey(rollup);
    const [, bucketMs, bucketIndex, counterKey] = /^(\d+):(-?\d+):(.*)$/s.exec(key)!;
    assert.deepEqual([Number(bucketMs), Number(bucketIndex), counterKey], [rollup.bucketMs, rollup.bucketIndex, rollup.counterKey]);
    assert.notEqual(rollupKey({ ...rollup, bucketIndex: rollup.bucketIndex + 1 }), key, 'one record per bucket');
    assert.notEqual(rollupKey({ ...rollup, bucketMs: 60_000 }), key, 'and per bucket size');
  });

  test('what is not a rollup says where and why', () => {
    const bad = (value: unknown) => {
      const r = decodeRollup(typeof value === 'string' ? value : JSON.stringify(value));
      assert.equal(r.ok, false);
      return (r as { detail: string }).detail;
    };
    assert.match(bad({ ...rollup, total: -1 }), /^total: /);
    assert.match(bad({ ...rollup, total: 1.5 }), /^total: /);
    assert.match(bad({ ...rollup, schemaVersion: 2 }), /^schemaVersion: /);
    assert.match(bad({ ...rollup, extra: true }), /extra/);
    assert.match(bad('{"__proto__": {"total": 1}, "schemaVersion": 1}'), /__proto__|region/);
    const { region: _r, ...noRegion } = rollup;
    assert.match(bad(noRegion), /^region: /);
    assert.match(bad('{not json'), /^not JSON/);
    assert.deepEqual(decodeRollup(null), { ok: false, detail: 'a tombstone: no rollup' });
  });

  test('newest wins: in any order, with duplicates, the reader ends at the largest total', () => {
    const totals = [3, 7, 7, 5, 12, 3, 12, 9];
    for (let shift = 0; shift < totals.length; shift++) {
      const order = [...totals.slice(shift), ...totals.slice(0, shift)];
      let held: number | undefined;
      for (const t of order) if (isNewerTotal(held, t)) held = t;
      assert.equal(held, 12, `order ${order.join(',')}`);
    }
    assert.equal(isNewerTotal(12, 12), false, 'a duplicate is not news');
    assert.equal(isNewerTotal(12, 9), false, 'nor an older total');
    assert.equal(isNewerTotal(undefined, 0), true, 'a first total of 0 is news (the bucket exists)');
  });
});
