/**
 * The store against a real Redis: fenced writes (applied / already applied / conflict), loads,
 * pruning, TTLs, meta, key layout and slots, versioned script names, and a clear error when Redis
 * is down. Every test writes under its own random key prefix.
 */
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import { QuotaflowError } from '../../src/errors.ts';
import { configureLogging } from '../../src/log.ts';
import { counterKey, tenantKey } from '../../src/policy/keys.ts';
import { programsFrom } from '../../src/stack/prereqs.ts';
import { startLocalRedis } from '../../src/stack/redis-local.ts';
import {
  RedisStore,
  StoreKeys,
  commandName,
  createRedisClient,
  openUsageStore,
  type CounterWrite,
  type LoadedCounter,
  type TenantWrite,
} from '../../src/store/index.ts';
import { applyUsageResult, loadScripts } from '../../src/store/scripts.ts';
import { services, uniqueName } from '../support/integration.ts';

configureLogging({ level: 'error' }); // the "Redis down" tests make the client warn on purpose

const HOUR = 3_600_000;
const T = 1_700_000_000_000; // event time of the writes below
const SEC_BUCKET = Math.floor(T / 1_000);
const MIN_BUCKET = Math.floor(T / 60_000);

interface Env {
  store: RedisStore;
  keys: StoreKeys;
  redis: Redis;
  prefix: string;
}

async function env(t: TestContext, options: ConstructorParameters<typeof RedisStore>[2] = {}): Promise<Env> {
  const prefix = `${uniqueName('st')}:`;
  const redis = createRedisClient(services().redisUrl);
  // This client fails commands instead of queueing them while it connects: wait, as RedisStore does.
  await once(redis, 'ready');
  const keys = new StoreKeys(prefix);
  t.after(async () => {
    try {
      let cursor = '0';
      do {
        const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
        cursor = next;
        if (found.length) await redis.unlink(...found);
      } while (cursor !== '0');
    } finally {
      await redis.quit().then(
        () => undefined,
        () => redis.disconnect(),
      );
    }
  });
  return { store: new RedisStore(redis, keys, options), keys, redis, prefix };
}

const tk = (id: string) => `api_key=${id}`;
const ck = (id: string, rule = 'per-key') => `{${tk(id)}}:rule=${rule}:api_key=${id}`;

/** A 60/min + 1800/h style write: `n` events in the current second and minute bucket. */
function counter(counterKeyText: string, n: number, extra: Partial<CounterWrite> = {}): CounterWrite {
  return {
    counterKey: counterKeyText,
    increments: [
      { bucketMs: 1_000, bucketIndex: SEC_BUCKET, delta: n },
      { bucketMs: 60_000, bucketIndex: MIN_BUCKET, delta: n },
    ],
    ...extra,
  };
}

function write(id: string, expectedFence: number | null, newFence: number, counters: CounterWrite[], ttlMs = HOUR): TenantWrite {
  return { tenantKey: tk(id), expectedFence, newFence, ttlMs, counters };
}

/** bucket field → count, for comparisons that ignore order. */
function counts(c: LoadedCounter): Record<string, number> {
  const out: Record<string, number> = {};
  for (const b of c.buckets) out[`b${b.bucketMs}:${b.bucketIndex}`] = b.count;
  return out;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const { port } = server.address() as { port: number };
  await new Promise((res) => server.close(res));
  return port;
}

describe('RedisStore: fenced writes', () => {
  test('apply then load round-trips counts, meta and the fence, for several tenants in one call', async (t) => {
    const { store } = await env(t);
    const results = await store.apply(3, [
      write('k1', null, 41, [counter(ck('k1'), 5, { meta: { _dec: '{"state":"block"}', '_br:60000': '{"count":61}' } }), counter(ck('k1', 'hourly'), 2)]),
      write('k2', null, 42, [counter(ck('k2'), 1)]),
    ]);
    assert.deepEqual(results, [
      { tenantKey: tk('k1'), status: 'applied', fence: 41 },
      { tenantKey: tk('k2'), status: 'applied', fence: 42 },
    ]);
    const loaded = await store.load(3, [
      { tenantKey: tk('k1'), counterKeys: [ck('k1'), ck('k1', 'hourly'), ck('k1', 'never-written')] },
      { tenantKey: tk('k2'), counterKeys: [ck('k2')] },
      { tenantKey: tk('k3'), counterKeys: [ck('k3')] },
    ]);
    assert.deepEqual(
      loaded.map((l) => [l.tenantKey, l.fence]),
      [
        [tk('k1'), 41],
        [tk('k2'), 42],
        [tk('k3'), null],
      ],
    );
    const [k1, k2, k3] = loaded;
    assert.deepEqual(counts(k1!.counters[0]!), { [`b1000:${SEC_BUCKET}`]: 5, [`b60000:${MIN_BUCKET}`]: 5 });
    assert.deepEqual(k1!.counters[0]!.meta, { _dec: '{"state":"block"}', '_br:60000': '{"count":61}' });
    assert.deepEqual(counts(k1!.counters[1]!), { [`b1000:${SEC_BUCKET}`]: 2, [`b60000:${MIN_BUCKET}`]: 2 });
    assert.deepEqual(k1!.counters[2], { counterKey: ck('k1', 'never-written'), buckets: [], meta: {} });
    assert.deepEqual(counts(k2!.counters[0]!), { [`b1000:${SEC_BUCKET}`]: 1, [`b60000:${MIN_BUCKET}`]: 1 });
    assert.deepEqual(k3!.counters, [{ counterKey: ck('k3'), buckets: [], meta: {} }]);
    // Fences are per partition: partition 4 has seen nothing of k1.
    assert.equal((await store.load(4, [{ tenantKey: tk('k1'), counterKeys: [] }]))[0]!.fence, null);
    // Increments add up across writes, including negative deltas.
    await store.apply(3, [
      write('k1', 41, 50, [
        {
          counterKey: ck('k1'),
          increments: [
            { bucketMs: 1_000, bucketIndex: SEC_BUCKET, delta: 10 },
            { bucketMs: 1_000, bucketIndex: SEC_BUCKET + 1, delta: -2 },
          ],
        },
      ]),
    ]);
    const again = (await store.load(3, [{ tenantKey: tk('k1'), counterKeys: [ck('k1')] }]))[0]!;
    assert.equal(again.fence, 50);
    assert.deepEqual(counts(again.counters[0]!), { [`b1000:${SEC_BUCKET}`]: 15, [`b1000:${SEC_BUCKET + 1}`]: -2, [`b60000:${MIN_BUCKET}`]: 5 });
  });

  test('a redelivered write (same newFence, fence as stored) is already-applied and changes nothing', async (t) => {
    const { store, redis, keys } = await env(t);
    const first = write('k1', null, 10, [counter(ck('k1'), 3, { meta: { _dec: 'a' } })]);
    assert.equal((await store.apply(0, [first]))[0]!.status, 'applied');
    const before = await redis.hgetall(keys.counter(ck('k1')));
    const redelivered = write('k1', 10, 10, [counter(ck('k1'), 3, { meta: { _dec: 'b' } })]);
    assert.deepEqual(await store.apply(0, [redelivered]), [{ tenantKey: tk('k1'), status: 'already-applied', fence: 10 }]);
    // An older newFence is already applied as well.
    assert.deepEqual(await store.apply(0, [write('k1', 10, 7, [counter(ck('k1'), 3)])]), [{ tenantKey: tk('k1'), status: 'already-applied', fence: 10 }]);
    assert.deepEqual(await redis.hgetall(keys.counter(ck('k1'))), before);
    assert.equal(await redis.hget(keys.fence(tk('k1')), '0'), '10');
  });

  test('a write of meta fields only at the stored fence applies (a lapse timer between batches); with increments it is a redelivery', async (t) => {
    const { store, redis, keys } = await env(t);
    assert.equal((await store.apply(0, [write('k1', null, 10, [counter(ck('k1'), 3, { meta: { _dec: 'block' } })])]))[0]!.status, 'applied');
    const metaOnly = write('k1', 10, 10, [{ counterKey: ck('k1'), increments: [], meta: { _dec: '' } }]);
    assert.deepEqual(await store.apply(0, [metaOnly]), [{ tenantKey: tk('k1'), status: 'applied', fence: 10 }]);
    assert.equal(await redis.hget(keys.counter(ck('k1')), '_dec'), null, 'the block is gone');
    assert.equal(await redis.hget(keys.counter(ck('k1')), `b1000:${SEC_BUCKET}`), '3', 'counts untouched');
    assert.equal(await redis.hget(keys.fence(tk('k1')), '0'), '10', 'the fence did not move');
    // From an aggregator that lost the tenant meanwhile: a conflict, as for any write.
    assert.equal((await store.apply(0, [write('k1', 9, 9, [{ counterKey: ck('k1'), increments: [], meta: { _dec: 'x' } }])]))[0]!.status, 'conflict');
  });

  test('a stale expectedFence is a conflict: nothing changes and the stored fence is reported', async (t) => {
    const { store, redis, keys } = await env(t);
    await store.apply(1, [write('k1', null, 20, [counter(ck('k1'), 4)])]);
    const before = await redis.hgetall(keys.counter(ck('k1')));
    // A zombie that never saw offset 20 (null), and one whose view stopped at offset 12.
    for (const stale of [null, 12]) {
      const r = await store.apply(1, [write('k1', stale, 30, [counter(ck('k1'), 9, { meta: { _dec: 'zombie' } }), counter(ck('k1', 'other'), 9)])]);
      assert.deepEqual(r, [{ tenantKey: tk('k1'), status: 'conflict', fence: 20 }]);
    }
    // A writer retrying its own write after a lost reply sends the same write again: a conflict
    // that reports its own fence, after which it reloads (the fence check comes first).
    assert.deepEqual(await store.apply(1, [write('k1', null, 20, [counter(ck('k1'), 4)])]), [{ tenantKey: tk('k1'), status: 'conflict', fence: 20 }]);
    // Expecting a fence where none is stored is a conflict too, reported as null.
    assert.deepEqual(await store.apply(1, [write('k2', 5, 9, [counter(ck('k2'), 1)])]), [{ tenantKey: tk('k2'), status: 'conflict', fence: null }]);
    assert.deepEqual(await redis.hgetall(keys.counter(ck('k1'))), before);
    assert.equal(await redis.exists(keys.counter(ck('k1', 'other')), keys.counter(ck('k2')), keys.fence(tk('k2'))), 0);
    assert.equal(await redis.hget(keys.fence(tk('k1')), '1'), '20');
    // Only the tenant whose fence is stale is turned away; the others of the batch are applied.
    const mixed = await store.apply(1, [write('k1', 3, 40, [counter(ck('k1'), 1)]), write('k3', null, 40, [counter(ck('k3'), 1)])]);
    assert.deepEqual(
      mixed.map((r) => r.status),
      ['conflict', 'applied'],
    );
  });

  test('two aggregators racing from the same expectedFence: exactly one write lands, every time', async (t) => {
    const a = await env(t);
    const other = createRedisClient(services().redisUrl);
    t.after(() =>
      other.quit().then(
        () => undefined,
        () => other.disconnect(),
      ),
    );
    const b = new RedisStore(other, a.keys);
    const tenants = Array.from({ length: 50 }, (_, i) => `race${i}`);
    await a.store.apply(
      0,
      tenants.map((id) => write(id, null, 100, [counter(ck(id), 1)])),
    );
    for (let round = 0; round < 5; round++) {
      const expected = 100 + round * 10;
      const [ra, rb] = await Promise.all([
        a.store.apply(
          0,
          tenants.map((id) => write(id, expected, expected + 10, [counter(ck(id), 1000)])),
        ),
        b.apply(
          0,
          tenants.map((id) => write(id, expected, expected + 10, [counter(ck(id), 1)])),
        ),
      ]);
      for (let i = 0; i < tenants.length; i++) {
        const statuses = [ra[i]!.status, rb[i]!.status].sort();
        assert.deepEqual(statuses, ['applied', 'conflict'], `tenant ${tenants[i]} round ${round}`);
        const loser = ra[i]!.status === 'conflict' ? ra[i]! : rb[i]!;
        assert.equal(loser.fence, expected + 10, "the loser learns the winner's fence");
      }
    }
    const loaded = await a.store.load(
      0,
      tenants.map((id) => ({ tenantKey: tk(id), counterKeys: [ck(id)] })),
    );
    for (const l of loaded) {
      const n = counts(l.counters[0]!)[`b1000:${SEC_BUCKET}`]!;
      // 1 from the first write plus, per round, 1000 (a won) or 1 (b won): never both, never neither.
      const aWins = Math.floor((n - 1) / 1000);
      assert.equal(n, 1 + aWins * 1000 + (5 - aWins), `${l.tenantKey}: ${n}`);
      assert.equal(l.fence, 150);
    }
  });

  test('redelivery with other batch boundaries and crashes between write and commit: every event counted once', async (t) => {
    const { store } = await env(t);
    // 40 events of one tenant at offsets 0..39 (every third on a second counter), each of cost (offset % 5) + 1.
    const events = Array.from({ length: 40 }, (_, offset) => ({
      offset,
      counterKey: offset % 3 === 0 ? ck('k1', 'b') : ck('k1', 'a'),
      cost: (offset % 5) + 1,
    }));
    const truth = new Map<string, number>();
    for (const e of events) truth.set(e.counterKey, (truth.get(e.counterKey) ?? 0) + e.cost);

    /** What an aggregator does with a batch: drop what the fence covers, write the rest fenced. */
    async function fold(fence: number | null, batch: typeof events): Promise<ReturnType<RedisStore['apply']>> {
      const fresh = batch.filter((e) => e.offset > (fence ?? -1));
      const sums = new Map<string, number>();
      for (const e of fresh) sums.set(e.counterKey, (sums.get(e.counterKey) ?? 0) + e.cost);
      const counters = [...sums].map(([key, n]): CounterWrite => ({ counterKey: key, increments: [{ bucketMs: 1_000, bucketIndex: SEC_BUCKET, delta: n }] }));
      return store.apply(0, [write('k1', fence, batch.at(-1)!.offset, counters)]);
    }
    const load = async () => (await store.load(0, [{ tenantKey: tk('k1'), counterKeys: [] }]))[0]!.fence;

    // Aggregator 1 applies 0..14, then crashes before committing offsets: Kafka redelivers from 0.
    assert.equal((await fold(null, events.slice(0, 15)))[0]!.status, 'applied');
    // Aggregator 2 reloads, gets 0..24 in one batch (other boundaries), and only writes 15..24.
    let fence = await load();
    assert.equal(fence, 14);
    assert.equal((await fold(fence, events.slice(0, 25)))[0]!.status, 'applied');
    // Aggregator 1, a zombie, still writes its next batch from its old view: turned away.
    const zombie = await fold(14, events.slice(15, 30));
    assert.deepEqual(zombie[0], { tenantKey: tk('k1'), status: 'conflict', fence: 24 });
    // Aggregator 2 crashes again; aggregator 3 gets 20..39 redelivered in two batches.
    fence = await load();
    const r1 = await fold(fence, events.slice(20, 33));
    assert.equal(r1[0]!.status, 'applied');
    const r2 = await fold(r1[0]!.fence, events.slice(33));
    assert.equal(r2[0]!.status, 'applied');
    // The same last batch redelivered once more: already applied.
    assert.equal((await fold(r2[0]!.fence, events.slice(33)))[0]!.status, 'already-applied');

    const loaded = (await store.load(0, [{ tenantKey: tk('k1'), counterKeys: [ck('k1', 'a'), ck('k1', 'b')] }]))[0]!;
    assert.equal(loaded.fence, 39);
    assert.deepEqual(
      loaded.counters.map((c) => c.buckets[0]!.count),
      [truth.get(ck('k1', 'a')), truth.get(ck('k1', 'b'))],
    );
  });
});

describe('RedisStore: what a write does to the hashes', () => {
  test('prune deletes only the old fields of the named sizes, and only above the threshold', async (t) => {
    const { store, redis, keys } = await env(t);
    const key = ck('k1');
    const increments = [
      ...Array.from({ length: 30 }, (_, i) => ({ bucketMs: 1_000, bucketIndex: 100 + i, delta: 1 })), // 100..129
      ...Array.from({ length: 5 }, (_, i) => ({ bucketMs: 60_000, bucketIndex: 1 + i, delta: 1 })), // 1..5
      ...Array.from({ length: 3 }, (_, i) => ({ bucketMs: 5_000, bucketIndex: i, delta: 1 })), // a size the rule does not name
    ];
    await store.apply(0, [write('k1', null, 1, [{ counterKey: key, increments, meta: { _dec: 'x', '_br:60000': 'y' } }])]);
    assert.equal(await redis.hlen(keys.counter(key)), 40);
    const keepFrom = [
      { bucketMs: 1_000, bucketIndex: 120 },
      { bucketMs: 60_000, bucketIndex: 4 },
    ];
    // At the threshold (HLEN 40, not more than 40): nothing is scanned or deleted.
    await store.apply(0, [write('k1', 1, 2, [{ counterKey: key, increments: [], prune: { whenMoreThan: 40, keepFrom } }])]);
    assert.equal(await redis.hlen(keys.counter(key)), 40);
    // Above it: b1000 below 120 and b60000 below 4 go; the rest, b5000 and meta stay.
    await store.apply(0, [
      write('k1', 2, 3, [{ counterKey: key, increments: [{ bucketMs: 1_000, bucketIndex: 130, delta: 7 }], prune: { whenMoreThan: 39, keepFrom } }]),
    ]);
    const fields = Object.keys(await redis.hgetall(keys.counter(key))).sort();
    const expected = [
      ...Array.from({ length: 11 }, (_, i) => `b1000:${120 + i}`),
      'b5000:0',
      'b5000:1',
      'b5000:2',
      'b60000:4',
      'b60000:5',
      '_br:60000',
      '_dec',
    ].sort();
    assert.deepEqual(fields, expected);
    assert.equal(await redis.hget(keys.counter(key), 'b1000:130'), '7');
  });

  test('prune copes with thousands of stale fields in one sweep', async (t) => {
    const { store, redis, keys } = await env(t);
    const key = ck('big');
    const increments = Array.from({ length: 12_000 }, (_, i) => ({ bucketMs: 1, bucketIndex: i, delta: 1 }));
    await store.apply(0, [write('big', null, 1, [{ counterKey: key, increments }])]);
    await store.apply(0, [
      write('big', 1, 2, [{ counterKey: key, increments: [], prune: { whenMoreThan: 100, keepFrom: [{ bucketMs: 1, bucketIndex: 11_990 }] } }]),
    ]);
    assert.equal(await redis.hlen(keys.counter(key)), 10);
  });

  test('the TTL is (re)set on the fence and on every counter written, and on no other key', async (t) => {
    const { store, redis, keys } = await env(t);
    await store.apply(0, [write('k1', null, 1, [counter(ck('k1', 'a'), 1), counter(ck('k1', 'b'), 1)], 600_000)]);
    for (const key of [keys.fence(tk('k1')), keys.counter(ck('k1', 'a')), keys.counter(ck('k1', 'b'))]) {
      const ttl = await redis.pttl(key);
      assert.ok(ttl > 590_000 && ttl <= 600_000, `${key}: ${ttl}`);
    }
    // A later write with a longer TTL moves the fence and the counter it touches; b keeps its TTL.
    await store.apply(0, [write('k1', 1, 2, [{ counterKey: ck('k1', 'a'), increments: [], meta: { _dec: 'x' } }], 2 * HOUR)]);
    assert.ok((await redis.pttl(keys.fence(tk('k1')))) > HOUR);
    assert.ok((await redis.pttl(keys.counter(ck('k1', 'a')))) > HOUR);
    assert.ok((await redis.pttl(keys.counter(ck('k1', 'b')))) <= 600_000);
    // A conflicting write touches nothing, TTLs included.
    await store.apply(0, [write('k1', 0, 3, [counter(ck('k1', 'b'), 1)], 3 * HOUR)]);
    assert.ok((await redis.pttl(keys.counter(ck('k1', 'b')))) <= 600_000);
  });

  test('a meta value of "" deletes the field; other meta fields and buckets stay', async (t) => {
    const { store } = await env(t);
    await store.apply(0, [write('k1', null, 1, [counter(ck('k1'), 2, { meta: { _dec: 'block', '_br:60000': 'open', '_br:3600000': 'open' } })])]);
    await store.apply(0, [write('k1', 1, 2, [{ counterKey: ck('k1'), increments: [], meta: { '_br:60000': '', _dec: 'unblock', '_never-set': '' } }])]);
    const c = (await store.load(0, [{ tenantKey: tk('k1'), counterKeys: [ck('k1')] }]))[0]!.counters[0]!;
    assert.deepEqual(c.meta, { _dec: 'unblock', '_br:3600000': 'open' });
    assert.equal(c.buckets.length, 2);
  });

  test('a write with only a fence advance (no counters) is valid', async (t) => {
    const { store } = await env(t);
    assert.equal((await store.apply(0, [write('k1', null, 5, [])]))[0]!.status, 'applied');
    assert.equal((await store.load(0, [{ tenantKey: tk('k1'), counterKeys: [] }]))[0]!.fence, 5);
    assert.deepEqual(await store.apply(0, []), []);
    assert.deepEqual(await store.load(0, []), []);
  });
});

describe('StoreKeys and key safety', () => {
  // The same hostile values as test/unit/store-keys.test.ts, which checks their slots.
  const hostile = ['a:b:c', 'star*?[x]', 'line\nbreak\r\n', 'ünïcødé 🚀 日本語', 'x'.repeat(10_000), 'percent %41 and = and @api='];

  test('apply and load work with hostile tenant and counter values, encoded or raw', async (t) => {
    const { store, redis, prefix } = await env(t);
    const writes: TenantWrite[] = [];
    const asked: Array<{ tenantKey: string; counterKeys: string[] }> = [];
    hostile.forEach((value, i) => {
      // As the policy builds them (escaped), and raw: the store needs neither escaping nor a charset.
      const tenant = { subject: 'account', value };
      const encoded = { tenantKey: tenantKey(tenant), counterKey: counterKey({ tenant, rule: 'r', scope: [{ subject: 'account', value }] }) };
      const rawTenant = `raw${i}=${value}`;
      const raw = { tenantKey: rawTenant, counterKey: `{${rawTenant}}:rule=r:${value}:{${value}}` };
      for (const k of [encoded, raw]) {
        writes.push({
          tenantKey: k.tenantKey,
          expectedFence: null,
          newFence: 7,
          ttlMs: HOUR,
          counters: [{ counterKey: k.counterKey, increments: [{ bucketMs: 1_000, bucketIndex: i, delta: i + 1 }], meta: { _dec: value } }],
        });
        asked.push({ tenantKey: k.tenantKey, counterKeys: [k.counterKey] });
      }
    });
    assert.ok((await store.apply(0, writes)).every((r) => r.status === 'applied'));
    const loaded = await store.load(0, asked);
    loaded.forEach((l, j) => {
      const i = Math.floor(j / 2);
      assert.equal(l.fence, 7);
      assert.deepEqual(l.counters[0]!.buckets, [{ bucketMs: 1_000, bucketIndex: i, count: i + 1 }]);
      assert.equal(l.counters[0]!.meta._dec, hostile[i]);
    });
    // Nothing was written outside the prefix, and every tenant got exactly its fence and its counter.
    assert.equal((await redis.keys(`${prefix}*`)).length, writes.length * 2);
  });

  test('the prefix is validated, and so are tenant and counter keys', async (t) => {
    for (const bad of ['', 'qf{x}:', 'a}', 'sp ace:', 'star*:']) {
      assert.throws(
        () => new StoreKeys(bad),
        (e: unknown) => e instanceof QuotaflowError && e.code === 'CONFIG_INVALID',
        JSON.stringify(bad),
      );
    }
    const keys = new StoreKeys('qf:');
    assert.equal(keys.counter(ck('k1')), 'qf:c:{api_key=k1}:rule=per-key:api_key=k1');
    assert.equal(keys.fence(tk('k1')), 'qf:f:{api_key=k1}');
    assert.throws(() => keys.fence('a{b'), RangeError);
    assert.throws(() => keys.fence(''), RangeError);
    assert.throws(() => keys.counter('api_key=k1:rule=x'), RangeError);
    assert.throws(() => keys.counter('{}:rule=x'), RangeError);

    const { store, redis, prefix } = await env(t);
    // A counter of another tenant would sit in another slot: refused before anything is sent.
    await assert.rejects(store.apply(0, [write('k1', null, 1, [counter(ck('k2'), 1)])]), RangeError);
    await assert.rejects(store.apply(0, [write('k1', null, 1, [counter(`{${tk('k1')}x}:rule=r`, 1)])]), RangeError);
    await assert.rejects(store.load(0, [{ tenantKey: tk('k1'), counterKeys: [ck('k2')] }]), RangeError);
    await assert.rejects(store.apply(0, [write('k1', null, 1, [counter(ck('k1'), 1, { meta: { dec: 'x' } })])]), /start with "_"/);
    await assert.rejects(
      store.apply(0, [write('k1', null, 1, [{ counterKey: ck('k1'), increments: [{ bucketMs: 1_000, bucketIndex: 1, delta: 0.5 }] }])]),
      RangeError,
    );
    await assert.rejects(store.apply(0, [write('k1', null, 1, [], 0)]), RangeError);
    await assert.rejects(store.apply(-1, [write('k1', null, 1, [])]), RangeError);
    await assert.rejects(store.apply(0, [write('k1', -3, 1, [])]), RangeError);
    assert.equal((await redis.keys(`${prefix}*`)).length, 0);
  });
});

describe('the Lua scripts', () => {
  test('applyUsage is registered under a name that carries the package version', async (t) => {
    const { store, redis } = await env(t);
    const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
    const name = `qf_${version.replace(/[^A-Za-z0-9]/g, '_')}_applyUsage`;
    assert.equal(commandName('applyUsage'), name);
    assert.equal(store.applyUsageCommand, name);
    assert.equal(typeof (redis as unknown as Record<string, unknown>)[name], 'function');
    assert.match(name, /^qf_\d+_\d+_\d+.*_applyUsage$/);
  });

  test('each script file is named <verb><Noun>-<numKeys>.lua and documents its KEYS, ARGV and return value; includes are inlined', () => {
    const dir = new URL('../../src/store/lua/', import.meta.url);
    const files = readdirSync(dir).filter((f) => f.endsWith('.lua'));
    assert.ok(files.includes('applyUsage-n.lua'));
    for (const f of files) {
      assert.match(f, /^[a-z][A-Za-z0-9]*-(\d+|n)\.lua$/);
      const head = readFileSync(new URL(f, dir), 'utf8').split(']]')[0]!;
      for (const part of ['KEYS[1]', 'ARGV[1]', 'Output']) assert.ok(head.includes(part), `${f} header names ${part}`);
    }
    const apply = loadScripts().find((s) => s.name === 'applyUsage')!;
    assert.equal(apply.numberOfKeys, undefined, '-n: the key count is given per call');
    assert.ok(!apply.lua.includes('@include'), 'includes are inlined');
    assert.match(apply.lua, /local function pruneBuckets/);
  });

  test('ARGV that does not match KEYS is refused before anything is written', async (t) => {
    const { store, redis, keys } = await env(t);
    const call = (redis as unknown as Record<string, (...args: (string | number)[]) => Promise<[number, number]>>)[store.applyUsageCommand]!.bind(redis);
    const fence = keys.fence(tk('k1'));
    const c = keys.counter(ck('k1'));
    // One counter key, but its block claims 2 increments and carries 1.
    assert.equal((await call(2, fence, c, 0, -1, 5, 1000, 2, 0, 0, 0, 'b1000:1', 1))[0], -2);
    // A block too few, a count that is not a number, a block too many.
    assert.equal((await call(2, fence, c, 0, -1, 5, 1000))[0], -2);
    assert.equal((await call(2, fence, c, 0, -1, 5, 1000, 'x', 0, 0, 0))[0], -2);
    assert.equal((await call(2, fence, c, 0, -1, 5, 1000, 0, 0, 0, 0, 0, 0, 0, 0))[0], -2);
    assert.equal(await redis.exists(fence, c), 0, 'nothing written');
    assert.deepEqual(await call(2, fence, c, 0, -1, 5, 1000, 0, 0, 0, 0), [1, 5], 'the well-formed call applies');
    // What the store makes of such a reply is an error, not a result.
    assert.throws(() => applyUsageResult('t', [-2, 5]), /does not match its KEYS/);
  });
});

describe('RedisStore when Redis is away', () => {
  test('a store on a port nothing listens on fails promptly with a retriable SERVICE_UNREACHABLE', async (t) => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    const client = createRedisClient(url);
    t.after(() => client.disconnect());
    const store = new RedisStore(client, new StoreKeys('qf:'));
    for (const call of [
      () => store.apply(0, [write('k1', null, 1, [counter(ck('k1'), 1)])]),
      () => store.load(0, [{ tenantKey: tk('k1'), counterKeys: [ck('k1')] }]),
    ]) {
      const started = Date.now();
      await assert.rejects(call(), (e: unknown) => {
        assert.ok(e instanceof QuotaflowError, String(e));
        assert.equal(e.code, 'SERVICE_UNREACHABLE');
        assert.equal(e.retriable, true);
        assert.match(e.message, /Redis is unreachable/);
        return true;
      });
      assert.ok(Date.now() - started < 2_000, `failed after ${Date.now() - started} ms`);
    }
  });

  test('a default-configured ioredis client (offline queue, 20 retries) still fails within the store timeout', async (t) => {
    const client = new Redis(`redis://127.0.0.1:${await freePort()}`, { lazyConnect: true });
    client.on('error', () => {});
    t.after(() => client.disconnect());
    const store = new RedisStore(client, new StoreKeys('qf:'), { timeoutMs: 500 });
    const started = Date.now();
    await assert.rejects(
      store.apply(0, [write('k1', null, 1, [])]),
      (e: unknown) => e instanceof QuotaflowError && e.code === 'SERVICE_UNREACHABLE' && e.retriable,
    );
    assert.ok(Date.now() - started < 1_500, `failed after ${Date.now() - started} ms`);
  });

  test('openUsageStore refuses to open on an unreachable Redis, quickly', async () => {
    const started = Date.now();
    await assert.rejects(
      openUsageStore(`redis://127.0.0.1:${await freePort()}`, { keyPrefix: 'qf:' }),
      (e: unknown) => e instanceof QuotaflowError && e.code === 'SERVICE_UNREACHABLE',
    );
    assert.ok(Date.now() - started < 2_000);
  });

  test('a server that accepts connections but never answers: SERVICE_UNREACHABLE at the store timeout', async (t) => {
    const sockets = new Set<import('node:net').Socket>();
    const server = createServer((socket) => sockets.add(socket));
    await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
    t.after(() => {
      for (const s of sockets) s.destroy();
      server.close();
    });
    const client = createRedisClient(`redis://127.0.0.1:${(server.address() as { port: number }).port}`);
    t.after(() => client.disconnect());
    const store = new RedisStore(client, new StoreKeys('qf:'), { timeoutMs: 300 });
    const started = Date.now();
    await assert.rejects(
      store.load(0, [{ tenantKey: tk('k1'), counterKeys: [] }]),
      (e: unknown) => e instanceof QuotaflowError && e.code === 'SERVICE_UNREACHABLE' && e.retriable,
    );
    assert.ok(Date.now() - started < 1_500, `failed after ${Date.now() - started} ms`);
  });

  test('Redis frozen mid-connection: TIMEOUT (retriable); after it thaws the late write has landed and a retry is a conflict, not a double count', async (t) => {
    const server = await startLocalRedis({ programs: programsFrom(process.env) });
    let frozen = false;
    t.after(async () => {
      if (frozen) process.kill(server.process.pid, 'SIGCONT');
      await server.stop();
    });
    const client = createRedisClient(server.url);
    t.after(() => client.disconnect());
    const store = new RedisStore(client, new StoreKeys('qf:'), { timeoutMs: 400 });
    assert.equal((await store.apply(0, [write('k1', null, 1, [counter(ck('k1'), 1)])]))[0]!.status, 'applied');

    process.kill(server.process.pid, 'SIGSTOP');
    frozen = true;
    const started = Date.now();
    const late = write('k1', 1, 2, [counter(ck('k1'), 10)]);
    await assert.rejects(store.apply(0, [late]), (e: unknown) => e instanceof QuotaflowError && e.code === 'TIMEOUT' && e.retriable);
    assert.ok(Date.now() - started < 1_500, `failed after ${Date.now() - started} ms`);

    process.kill(server.process.pid, 'SIGCONT');
    frozen = false;
    // The caller does not know whether the write landed; retrying it is safe either way.
    let retried: Awaited<ReturnType<RedisStore['apply']>> | undefined;
    for (let i = 0; i < 50 && !retried; i++) retried = await store.apply(0, [late]).catch(() => undefined);
    assert.deepEqual(retried, [{ tenantKey: tk('k1'), status: 'conflict', fence: 2 }]);
    const loaded = (await store.load(0, [{ tenantKey: tk('k1'), counterKeys: [ck('k1')] }]))[0]!;
    assert.equal(loaded.fence, 2);
    assert.equal(counts(loaded.counters[0]!)[`b1000:${SEC_BUCKET}`], 11);
  });

  test('a key of the wrong type under the prefix is a non-retriable error, not an outage', async (t) => {
    const { store, redis, keys } = await env(t);
    await redis.set(keys.counter(ck('k1')), 'not a hash');
    await assert.rejects(
      store.apply(0, [write('k1', null, 1, [counter(ck('k1'), 1)])]),
      (e: unknown) => e instanceof QuotaflowError && e.code === 'CONFIG_INVALID' && !e.retriable && /WRONGTYPE/.test(e.message),
    );
  });
});

describe('RedisStore round trips', () => {
  test('apply and load each cost one pipeline, reported to onRoundTrip with their command count', async (t) => {
    const trips: Array<{ ms: number; ops: number; kind: string }> = [];
    const { store, redis, prefix } = await env(t, { onRoundTrip: (ms, ops, kind) => trips.push({ ms, ops, kind }) });
    const tenants = Array.from({ length: 200 }, (_, i) => `rt${i}`);
    await store.apply(
      0,
      tenants.map((id) => write(id, null, 1, [counter(ck(id, 'a'), 1), counter(ck(id, 'b'), 1), counter(ck(id, 'c'), 1)])),
    );
    await store.load(
      0,
      tenants.map((id) => ({ tenantKey: tk(id), counterKeys: [ck(id, 'a'), ck(id, 'b'), ck(id, 'c')] })),
    );
    assert.deepEqual(
      trips.map((x) => [x.kind, x.ops]),
      [
        ['apply', 200],
        ['load', 800],
      ],
    );
    assert.ok(trips.every((x) => x.ms > 0));
    assert.equal(await redis.exists(...tenants.map((id) => new StoreKeys(prefix).fence(tk(id)))), tenants.length);
  });

  test('openUsageStore opens a store of its own connection: the same contract, closed with close()', async (t) => {
    const prefix = `${uniqueName('st')}:`;
    const store = await openUsageStore(services().redisUrl, { keyPrefix: prefix });
    t.after(() => store.close());
    const [loaded] = await store.load(2, [{ tenantKey: tk('k1'), counterKeys: [ck('k1')] }]);
    assert.equal(loaded!.fence, null);
    const results = await store.apply(2, [
      {
        tenantKey: tk('k1'),
        expectedFence: null,
        newFence: 9,
        ttlMs: HOUR,
        counters: [
          {
            counterKey: ck('k1'),
            increments: [{ bucketMs: 1_000, bucketIndex: 5, delta: 3 }],
            meta: { _dec: 'x' },
            prune: { whenMoreThan: 100, keepFrom: [{ bucketMs: 1_000, bucketIndex: 0 }] },
          },
        ],
      },
    ]);
    assert.deepEqual(results, [{ tenantKey: tk('k1'), status: 'applied', fence: 9 }]);
    const again = await store.apply(2, [{ tenantKey: tk('k1'), expectedFence: null, newFence: 12, ttlMs: HOUR, counters: [] }]);
    assert.deepEqual(again, [{ tenantKey: tk('k1'), status: 'conflict', fence: 9 }]);
    const [after] = await store.load(2, [{ tenantKey: tk('k1'), counterKeys: [ck('k1')] }]);
    assert.equal(after!.fence, 9);
    assert.deepEqual(after!.counters, [{ counterKey: ck('k1'), buckets: [{ bucketMs: 1_000, bucketIndex: 5, count: 3 }], meta: { _dec: 'x' } }]);
    const redis = new Redis(services().redisUrl);
    t.after(() => redis.quit());
    const found = await redis.keys(`${prefix}*`);
    if (found.length) await redis.unlink(...found);
  });
});
