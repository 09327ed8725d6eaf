/**
 * The store's pure parts: key names and their cluster slots, bucket fields. No Redis needed; the
 * behaviour of the keys in a real Redis is in test/integration/store.test.ts.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { QuotaflowError } from '../../src/errors.ts';
import { counterKey, tenantKey } from '../../src/policy/keys.ts';
import { StoreKeys, bucketField, parseBucketField } from '../../src/store/index.ts';
import { isMetaField } from '../../src/store/fields.ts';
import { counterOfTenant } from '../../src/store/keys.ts';
import { hashSlot } from '../../src/store/slot.ts';

// ioredis's own slot function (CommonJS, untyped): the reference our keys must agree with.
const calculateSlot = createRequire(import.meta.url)('cluster-key-slot') as (key: string) => number;

const hostile = ['a:b:c', 'star*?[x]', 'line\nbreak\r\n', 'ünïcødé 🚀 日本語', 'x'.repeat(10_000), 'percent %41 and = and @api=', '\ud800 lone surrogate'];

describe('StoreKeys', () => {
  test('names the counter and fence hashes under the prefix', () => {
    const keys = new StoreKeys('qf:');
    assert.equal(keys.counter('{api_key=k1}:rule=per-key:api_key=k1'), 'qf:c:{api_key=k1}:rule=per-key:api_key=k1');
    assert.equal(keys.fence('api_key=k1'), 'qf:f:{api_key=k1}');
    assert.equal(new StoreKeys('it-1a2b.x_y:').fence('a=1'), 'it-1a2b.x_y:f:{a=1}');
  });

  test("refuses prefixes that are empty or could move the hash tag, and keys that are not a tenant's", () => {
    for (const bad of ['', 'qf{x}:', 'a}', '{', 'sp ace:', 'star*:', 'new\nline']) {
      assert.throws(
        () => new StoreKeys(bad),
        (e: unknown) => e instanceof QuotaflowError && e.code === 'CONFIG_INVALID',
        JSON.stringify(bad),
      );
    }
    const keys = new StoreKeys('qf:');
    for (const bad of ['', 'a{b', 'a}b']) assert.throws(() => keys.fence(bad), RangeError, JSON.stringify(bad));
    for (const bad of ['', 'api_key=k1:rule=x', '{}:rule=x', '{a', 'x{a}:rule']) assert.throws(() => keys.counter(bad), RangeError, JSON.stringify(bad));
  });

  test('a counter belongs to a tenant only when its hash tag is exactly that tenant', () => {
    assert.ok(counterOfTenant('{api_key=k1}:rule=r', 'api_key=k1'));
    assert.ok(!counterOfTenant('{api_key=k10}:rule=r', 'api_key=k1'));
    assert.ok(!counterOfTenant('{api_key=k}:rule=r', 'api_key=k1'));
    assert.ok(!counterOfTenant('api_key=k1}:rule=r', 'api_key=k1'));
    assert.ok(!counterOfTenant('{api_key=k1}', 'api_key=k1x'));
  });
});

describe('cluster slots', () => {
  test("every key of a tenant hashes to the tenant's slot, with hostile subject values, encoded or raw", () => {
    const keys = new StoreKeys('qf:');
    for (const value of hostile) {
      const tenant = { subject: 'account', value };
      const tKey = tenantKey(tenant);
      const counters = [
        counterKey({ tenant, rule: 'default', scope: [{ subject: 'account', value }] }),
        counterKey({
          tenant,
          rule: 'data:access*',
          api: `Insert\n${value}`,
          scope: [
            { subject: 'account', value },
            { subject: 'table', value: `{${value}}` },
          ],
        }),
      ];
      const slot = calculateSlot(keys.fence(tKey));
      assert.equal(slot, calculateSlot(tKey), 'the fence hashes on the tenant key');
      for (const c of counters) assert.equal(calculateSlot(keys.counter(c)), slot, c.slice(0, 80));
      assert.equal(hashSlot(keys.fence(tKey)), slot, "our slot function agrees with ioredis's");

      // The store itself needs no escaping: a raw tenant key only has to be brace-free (and valid
      // UTF-16: ioredis sends a lone surrogate as U+FFFD, so two raw keys could meet; the policy's
      // encoding above is what keeps those apart).
      if (/\p{Cs}/u.test(value)) continue; // a lone surrogate
      const raw = `raw=${value}`;
      const rawSlot = calculateSlot(keys.fence(raw));
      assert.equal(calculateSlot(keys.counter(`{${raw}}:rule=r:${value}:{${value}}`)), rawSlot);
      assert.equal(hashSlot(keys.counter(`{${raw}}:rule=r:${value}`)), rawSlot);
    }
  });

  test('hashSlot follows Redis: the first non-empty {tag} counts, else the whole key', () => {
    for (const key of ['plain', '{a}b', 'x{a}y{b}', '{', '}{x}', '🚀{ü}', 'x'.repeat(1000), '']) assert.equal(hashSlot(key), calculateSlot(key), key);
    // Values from a real `CLUSTER KEYSLOT`. For an empty first tag Redis hashes the whole key;
    // cluster-key-slot 1.1 hashes "c" instead. StoreKeys never builds such a key: the prefix has no
    // braces and every key's first tag is a non-empty tenant.
    assert.equal(hashSlot('a{}b{c}'), 7353);
    assert.equal(hashSlot('{a}b'), 15495);
    assert.equal(hashSlot('c'), 7365);
    // hashSlot hashes the bytes ioredis puts on the wire (Buffer's UTF-8, U+FFFD for a lone surrogate).
    assert.equal(hashSlot('{\ud800}'), hashSlot('{\ufffd}'));
  });
});

describe('counter hash fields', () => {
  test('bucket fields round-trip; meta and foreign fields are not buckets', () => {
    for (const [ms, index] of [
      [1_000, 1_700_000_000],
      [60_000, 0],
      [1, -5],
      [86_400_000, 19_675],
    ] as const) {
      assert.deepEqual(parseBucketField(bucketField(ms, index)), { bucketMs: ms, bucketIndex: index });
    }
    for (const f of ['_dec', '_br:60000', 'b0:1', 'b1000', 'b1000:', 'b1000:1x', 'bx:1', 'B1000:1', 'b01000:1', 'c1000:1']) {
      assert.equal(parseBucketField(f), undefined, f);
    }
    assert.ok(isMetaField('_dec') && isMetaField('_br:60000'));
    assert.ok(!isMetaField('_') && !isMetaField('dec') && !isMetaField('b1000:1'));
  });
});
