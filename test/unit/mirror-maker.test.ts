/** MirrorMaker 2's configuration as the launcher writes it, and the region names it accepts. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { exactTopicPattern, mirrorMakerProperties } from '../../src/stack/mirror-maker.ts';
import { parseRegionNames } from '../../src/stack/regions.ts';
import { rollupTopics } from '../../src/cli/regions.ts';
import { isQuotaflowError } from '../../src/errors.ts';

/** Reads a .properties text as java.util.Properties does for these lines: `key = value`, one backslash escape removed. */
function readProperties(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([^=\s]+)\s*=\s*(.*)$/.exec(line);
    if (m) out.set(m[1]!, m[2]!.replace(/\\(.)/g, '$1'));
  }
  return out;
}

describe('MirrorMaker 2 properties', () => {
  const regions = [
    { name: 'east', brokers: ['127.0.0.1:9001'] },
    { name: 'west', brokers: ['127.0.0.1:9002', '127.0.0.1:9003'] },
  ];
  const props = readProperties(mirrorMakerProperties(regions, ['t-1.quota.rollup']));

  test('every flow between two regions, low latency, each worker setting under its target alias', () => {
    assert.equal(props.get('clusters'), 'east, west');
    assert.equal(props.get('west.bootstrap.servers'), '127.0.0.1:9002,127.0.0.1:9003');
    for (const flow of ['east->west', 'west->east']) {
      assert.equal(props.get(`${flow}.enabled`), 'true');
      assert.equal(props.get(`${flow}.producer.override.linger.ms`), '0');
    }
    // A top-level offset.flush.interval.ms is ignored by MirrorMaker 2: it must be per target.
    assert.equal(props.get('offset.flush.interval.ms'), undefined);
    for (const r of ['east', 'west']) {
      assert.equal(props.get(`${r}.offset.flush.interval.ms`), '1000');
      assert.equal(props.get(`${r}.plugin.discovery`), 'service_load');
    }
    assert.equal(props.get('groups'), '^$', 'no consumer groups translated');
  });

  test('the topics setting, once read, is a regex that matches the rollup topic only', () => {
    const pattern = new RegExp(`^(?:${props.get('topics')})$`);
    assert.ok(pattern.test('t-1.quota.rollup'));
    for (const other of ['t-1xquota.rollup', 't-1.quota.rollupx', 't-1.quota.usage', 'east.t-1.quota.rollup', 'heartbeats']) {
      assert.ok(!pattern.test(other), other);
    }
  });

  test('exactTopicPattern escapes every regex character for the properties reader', () => {
    const name = 'a+b(c)[d]{e}|f^g$h?i*j.k\\l';
    const read = readProperties(`x = ${exactTopicPattern(name)}`).get('x')!;
    assert.ok(new RegExp(`^${read}$`).test(name));
    assert.ok(!new RegExp(`^${read}$`).test(name.replace('.', 'x')));
  });
});

describe('region names', () => {
  test('two to four different lower-case names', () => {
    assert.deepEqual(parseRegionNames('east,west'), ['east', 'west']);
    assert.deepEqual(parseRegionNames('eu-1, us-2, ap-3'), ['eu-1', 'us-2', 'ap-3']);
  });

  test('anything MirrorMaker 2 could not use as a cluster alias is a usage error with an example', () => {
    for (const bad of ['east', 'east,east', 'East,west', 'east,we.st', 'a,b,c,d,e', 'east,', '1a,b']) {
      assert.throws(
        () => parseRegionNames(bad),
        (e: unknown) => isQuotaflowError(e) && e.code === 'USAGE' && /--regions east,west/.test(e.describe()),
        bad,
      );
    }
  });
});

describe('rollup topics on a cluster (quotaflow regions)', () => {
  test("this region's own first, then one per remote region under its alias; nothing else", () => {
    const all = [
      'west.t.quota.rollup',
      't.quota.rollup',
      'east.t.quota.rollup',
      'east.heartbeats',
      'east.t.quota.usage',
      'north.east.t.quota.rollup', // re-mirrored through east: not a region of its own
      'east.u.quota.rollup', // another prefix
      'eastxt.quota.rollup',
    ];
    assert.deepEqual(rollupTopics(all, 't.'), [
      { region: null, topic: 't.quota.rollup' },
      { region: 'east', topic: 'east.t.quota.rollup' },
      { region: 'west', topic: 'west.t.quota.rollup' },
    ]);
    assert.deepEqual(rollupTopics(['quota.rollup', 'eu-1.quota.rollup'], ''), [
      { region: null, topic: 'quota.rollup' },
      { region: 'eu-1', topic: 'eu-1.quota.rollup' },
    ]);
  });
});
