/**
 * The published JSON Schema of a usage event and the aggregator's decoder agree on every record: a
 * producer written from `schemas/usage-event.schema.json` alone loses nothing to a rule it cannot
 * see, and nothing the schema rejects is counted (issue #12). The schema is validated by a real JSON
 * Schema validator (Ajv, draft 2020-12), and the edge cases come from the schema itself: every
 * numeric bound and its neighbours, every minimum length, every key pattern with the reserved keys,
 * plus the whole malformed corpus.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { decodeUsageEvent } from '../../src/events/decode.ts';
import { SCHEMAS_DIR } from '../../ops/gen-schemas.ts';
import { corpus } from '../support/malformed.ts';

type Json = Record<string, unknown>;
const schema = JSON.parse(readFileSync(join(SCHEMAS_DIR, 'usage-event.schema.json'), 'utf8')) as Json;
const validate = new Ajv2020({ allErrors: true, strict: false }).compile(schema);

/** The decoder with its only relative rule (the future skew) out of the way: no eventTime is ahead of this `now`. */
const DECODE = { now: 2 ** 53, futureSkewMs: 0 };

const refused = {
  schemaVersion: 1,
  eventTime: 1_711_108_902_000,
  region: 'eu-west-1',
  gatewayId: 'gw-1',
  subjects: { api_key: 'tp_1' },
  api: null,
  method: 'GET',
  path: '/agents',
  cost: 1,
  outcome: { kind: 'refused', decision: { counterKey: '{api_key=tp_1}:rule=per-key:api_key=tp_1', windowMs: 60_000, decidedAt: 1_711_108_900_000 } },
  requestId: 'req_abc123',
  policyVersion: '1',
};

interface Case {
  name: string;
  text: string;
}

const setAt = (value: Json, path: readonly string[], v: unknown): Json => {
  const copy = structuredClone(value);
  let o = copy;
  for (const p of path.slice(0, -1)) o = o[p] as Json;
  o[path.at(-1)!] = v;
  return copy;
};

/** A record with one key added at `path` (an object), as raw text: an object literal would turn "__proto__" into a prototype. */
const withRawKey = (value: Json, path: readonly string[], key: string, raw: string): string => {
  const marker = '@@key@@';
  return JSON.stringify(setAt(value, [...path, marker], 0)).replace(`"${marker}":0`, `${JSON.stringify(key)}:${raw}`);
};

/** Every edge case the schema states about the properties under `node`, as changes to `base` at `path`. */
function edgeCases(node: Json, path: string[], out: Case[]): void {
  const at = path.join('.') || '(event)';
  for (const sub of [...((node.oneOf as Json[] | undefined) ?? []), ...((node.anyOf as Json[] | undefined) ?? [])]) edgeCases(sub, path, out);
  const props = node.properties as Record<string, Json> | undefined;
  if (props) {
    for (const [name, prop] of Object.entries(props)) edgeCases(prop, [...path, name], out);
    for (const key of ['__proto__', 'constructor', 'prototype', 'unknown_field'])
      out.push({ name: `${at}: extra key ${key}`, text: withRawKey(refused, path, key, '{"cost":2}') });
  }
  for (const bound of ['minimum', 'maximum'] as const) {
    const b = node[bound] as number | undefined;
    if (b === undefined) continue;
    for (const v of [b - 1, b, b + 1]) out.push({ name: `${at} = ${v} (${bound} ${b})`, text: JSON.stringify(setAt(refused, path, v)) });
  }
  if (typeof node.minLength === 'number') {
    for (const n of [node.minLength - 1, node.minLength].filter((x) => x >= 0))
      out.push({ name: `${at} of ${n} chars (minLength ${node.minLength})`, text: JSON.stringify(setAt(refused, path, 'x'.repeat(n))) });
  }
  if (node.propertyNames) {
    for (const key of ['__proto__', 'constructor', 'prototype', 'toString', 'api_key', 'x-team', '']) {
      out.push({ name: `${at}: key ${JSON.stringify(key)}`, text: withRawKey(refused, path, key, '"v"') });
      out.push({ name: `${at}: key ${JSON.stringify(key)} holding an object`, text: withRawKey(refused, path, key, '{"api_key":"x"}') });
    }
  }
}

describe('usage-event.schema.json and decodeUsageEvent agree', () => {
  const cases: Case[] = [];
  edgeCases(schema, [], cases);

  test('the schema states the bounds the decoder enforces (so the edge cases below exist)', () => {
    const names = cases.map((c) => c.name);
    assert.ok(names.includes('cost = 1000001 (maximum 1000000)'), 'the cost maximum is published');
    assert.ok(names.includes('subjects: key "__proto__"'), 'subject keys have a pattern');
    assert.ok(cases.length > 60, `${cases.length} cases`);
  });

  for (const c of cases) {
    test(c.name, () => {
      const raw = JSON.parse(c.text) as unknown;
      const valid = validate(raw);
      const decoded = decodeUsageEvent(Buffer.from(c.text), DECODE);
      assert.equal(
        decoded.ok,
        valid,
        `schema says ${valid ? 'valid' : `invalid (${JSON.stringify(validate.errors?.[0])})`}, decoder says ${JSON.stringify(decoded).slice(0, 300)}`,
      );
    });
  }

  test('every JSON record of the malformed corpus, good and bad, gets the same verdict from both', () => {
    const records = corpus({ seed: 12, good: 200, bad: 400, tenants: ['a', 'b', 'c'], now: 1_711_108_902_000, hugeChars: 256 });
    let compared = 0;
    for (const r of records) {
      if (r.value === null) continue;
      let raw: unknown;
      try {
        raw = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(r.value));
      } catch {
        continue; // not JSON: nothing for a schema to say
      }
      if (r.expect === 'future') continue; // relative to a clock: the schema can only describe it
      compared++;
      const decoded = decodeUsageEvent(r.value, DECODE);
      assert.equal(decoded.ok, validate(raw), `${r.kind}: ${r.value.toString().slice(0, 200)}`);
    }
    assert.ok(compared > 450, `${compared} compared`);
  });
});
