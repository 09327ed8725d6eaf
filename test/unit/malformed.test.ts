/** The malformed-event corpus: every record decodes to what it claims, and it is deterministic. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeUsageEvent, MAX_DECODE_DETAIL_CHARS } from '../../src/events/decode.ts';
import { resolve } from '../../src/policy/index.ts';
import { corpus, corpusDecodeOptions, MALFORMED_KINDS, prng, type CorpusRecord } from '../support/malformed.ts';
import { loadShipped } from './fixtures/simulate.ts';

const NOW = 1_711_108_902_000;
const TENANTS = ['tp_live_a1', 'tp_live_b2', 'tp_live_c3', 'tp_live_example_high_volume'];

describe('the malformed-event corpus', () => {
  const records = corpus({ seed: 42, good: 500, bad: 2_000, tenants: TENANTS, now: NOW });

  test('every record decodes to exactly its expectation', () => {
    const opts = corpusDecodeOptions(NOW);
    const wrong: string[] = [];
    for (const [i, r] of records.entries()) {
      const d = decodeUsageEvent(r.value, opts);
      const got = d.ok ? 'good' : d.reason;
      if (got !== r.expect) wrong.push(`#${i} ${r.kind}: expected ${r.expect}, got ${got}${d.ok ? '' : ` (${d.detail})`}`);
      if (!d.ok) assert.ok(d.detail.length <= MAX_DECODE_DETAIL_CHARS, `#${i} ${r.kind}: detail of ${d.detail.length} chars`);
    }
    assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} records decoded otherwise`);
  });

  test('asked for 1,000 bad records, it gives 1,000 of every kind in MALFORMED_KINDS (at least 12)', () => {
    const only = corpus({ seed: 7, good: 0, bad: 1_000, tenants: TENANTS, now: NOW });
    assert.equal(only.length, 1_000);
    assert.ok(only.every((r) => r.expect !== 'good'));
    const kinds = new Set(only.map((r) => r.kind));
    assert.equal(kinds.size, MALFORMED_KINDS.length);
    assert.ok(kinds.size >= 12);
    const reasons = new Set(only.map((r) => r.expect));
    assert.deepEqual([...reasons].sort(), ['absurd-cost', 'empty', 'future', 'schema', 'undecodable', 'unsupported-version']);
  });

  test('the kinds the tests rely on are there', () => {
    for (const kind of [
      'null-value',
      'empty-value',
      'random-bytes',
      'invalid-utf8',
      'truncated-json',
      'not-an-object',
      'wrong-version',
      'missing-field',
      'wrong-type',
      'bad-cost',
      'absurd-cost',
      'future',
      'unknown-field',
      'subject-not-string',
      'huge-string',
    ] as const) {
      assert.ok(
        records.some((r) => r.kind === kind),
        kind,
      );
    }
    const huge = records.filter((r) => r.kind === 'huge-string');
    assert.ok(huge.every((r) => r.value!.length > 32_768));
  });

  test('good records are admitted TalkPilot events from the last minute, keyed by their tenant key', () => {
    const policy = loadShipped('talkpilot.yaml');
    const good = records.filter((r) => r.expect === 'good');
    assert.equal(good.length, 500);
    const costs = new Set<number>();
    for (const r of good) {
      const d = decodeUsageEvent(r.value, corpusDecodeOptions(NOW));
      assert.ok(d.ok);
      const e = d.event;
      assert.equal(r.key, `api_key=${e.subjects.api_key}`);
      assert.ok(TENANTS.includes(e.subjects.api_key!));
      assert.equal(e.api, null);
      assert.equal(e.outcome.kind, 'admitted');
      assert.ok(e.eventTime > NOW - 60_000 && e.eventTime <= NOW, `eventTime ${e.eventTime}`);
      costs.add(e.cost);
      const resolved = resolve(policy, { subjects: e.subjects, method: e.method, path: e.path });
      assert.equal(resolved.kind, 'resolved');
      if (resolved.kind !== 'resolved') return;
      assert.equal(resolved.rule.id, 'per-key');
      assert.equal(resolved.tenantKey, r.key);
    }
    assert.ok(costs.has(1) && [...costs].some((c) => c > 1), 'mostly cost 1, some coalesced');
    assert.deepEqual(new Set(good.map((r) => r.key)), new Set(TENANTS.map((t) => `api_key=${t}`)));
  });

  test('good and bad records are interleaved', () => {
    const firstHalf = records.slice(0, records.length / 2);
    assert.ok(firstHalf.some((r) => r.expect === 'good') && firstHalf.some((r) => r.expect !== 'good'));
    assert.notEqual(
      records.findIndex((r) => r.expect !== 'good'),
      500,
    );
  });

  test('the same seed gives the same bytes; another seed does not', () => {
    const same = (a: CorpusRecord[], b: CorpusRecord[]) =>
      a.length === b.length &&
      a.every(
        (r, i) =>
          r.key === b[i]!.key && r.expect === b[i]!.expect && (r.value === null ? b[i]!.value === null : b[i]!.value !== null && r.value.equals(b[i]!.value!)),
      );
    const opts = { good: 50, bad: 200, tenants: TENANTS, now: NOW };
    assert.ok(same(corpus({ seed: 1, ...opts }), corpus({ seed: 1, ...opts })));
    assert.ok(!same(corpus({ seed: 1, ...opts }), corpus({ seed: 2, ...opts })));
  });

  test('the PRNG is seeded and uniform enough', () => {
    const a = prng(123);
    const b = prng(123);
    const xs = Array.from({ length: 10_000 }, () => a());
    assert.deepEqual(
      xs.slice(0, 5),
      Array.from({ length: 5 }, () => b()),
    );
    assert.ok(xs.every((x) => x >= 0 && x < 1));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    assert.ok(Math.abs(mean - 0.5) < 0.02, `mean ${mean}`);
  });

  test('no tenants is a mistake, reported', () => {
    assert.throws(() => corpus({ seed: 1, good: 1, bad: 0, tenants: [], now: NOW }), /at least one tenant/);
  });
});
