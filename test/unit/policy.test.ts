/** Policy validation (with field paths), resolution precedence, routes, and counter-key injectivity. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  compilePolicy,
  counterKey,
  decodeComponent,
  decodeCounterKey,
  encodeComponent,
  formatPath,
  loadPolicyFile,
  parsePolicy,
  resolve,
  scopeKey,
  tenantKey,
  validatePolicyText,
  type CounterKeyParts,
  type PolicyInput,
} from '../../src/policy/index.ts';
import { isQuotaflowError } from '../../src/errors.ts';
import { POLICIES, POLICY_FILES, ROOT } from './fixtures/simulate.ts';

const BAD = join(ROOT, 'test', 'unit', 'fixtures', 'bad-policies');

describe('policy validate', () => {
  for (const file of POLICY_FILES) {
    test(`accepts policies/${file}`, async () => {
      const policy = await loadPolicyFile(join(POLICIES, file));
      assert.ok(policy.rules.length > 0);
    });
  }

  for (const file of readdirSync(BAD).filter((f) => f.endsWith('.yaml'))) {
    test(`rejects bad-policies/${file} with the field path`, async () => {
      const text = readFileSync(join(BAD, file), 'utf8');
      const expected = [...text.matchAll(/^# expect: (.*?): (.*)$/gm)].map((m) => ({ path: m[1]!, message: m[2]! }));
      assert.ok(expected.length > 0, 'fixture declares what it expects');
      const result = validatePolicyText(text);
      assert.equal(result.ok, false);
      if (result.ok) return;
      for (const e of expected) {
        assert.ok(
          result.issues.some((i) => i.path === e.path && i.message.includes(e.message)),
          `expected "${e.path}: ${e.message}" among:\n${result.issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`,
        );
      }
      await assert.rejects(
        loadPolicyFile(join(BAD, file)),
        (err) => isQuotaflowError(err) && err.code === 'POLICY_INVALID' && Array.isArray(err.details?.issues),
      );
    });
  }

  test('paths are printed as rules[2].limits[0].window and messages["1x"]', () => {
    assert.equal(formatPath(['rules', 2, 'limits', 0, 'window']), 'rules[2].limits[0].window');
    assert.equal(formatPath(['refusal', 'messages', '1x']), 'refusal.messages["1x"]');
  });
});

const BASE: PolicyInput = {
  version: 't1',
  product: 'Test',
  identity: {
    api_key: { header: 'X-API-Key' },
    organization: {},
    user: { query: 'user' },
    account: {},
    table: {},
    agent: { param: 'agent_id' },
  },
  tenant: 'organization|user',
  refusal: { message: 'slow down' },
  apis: [
    { name: 'Agent', routes: ['GET /v2/agent/:agent_id'] },
    { name: 'Agent status', routes: ['GET /v2/agent/status'] },
    { name: 'Agent update', routes: ['* /v2/agent/:agent_id'] },
    { name: 'Table', group: 'Data' },
    { name: 'Row', group: 'Data', aliases: ['Rows'] },
  ],
  rules: [
    { id: 'agent', apis: ['Agent', 'Agent status', 'Agent update'], scope: 'organization|user', per_api: true, limits: [{ limit: 5, window: '1m' }] },
    { id: 'data', groups: ['Data'], scope: 'account+table', limits: [{ limit: 9, window: '1h' }], shadow: true },
    { id: 'default', default: true, scope: 'organization|user', limits: [{ limit: 100, window: '60s' }] },
  ],
  overrides: [{ rule: 'default', subjects: { organization: 'big' }, limits: [{ limit: 1000, window: '60s' }] }],
};

describe('resolution', () => {
  const policy = compilePolicy(parsePolicy(BASE));

  test('a literal segment beats a parameter; an exact method beats *', () => {
    const status = resolve(policy, { method: 'GET', path: '/v2/agent/status', subjects: { user: 'u' } });
    assert.equal(status.kind === 'resolved' && status.api?.name, 'Agent status');
    const get = resolve(policy, { method: 'get', path: '/v2/agent/7', subjects: { user: 'u' } });
    assert.equal(get.kind === 'resolved' && get.api?.name, 'Agent');
    const put = resolve(policy, { method: 'PUT', path: '/v2/agent/7/', subjects: { user: 'u' } });
    assert.equal(put.kind === 'resolved' && put.api?.name, 'Agent update');
    // A POST to the literal path backtracks to the parameter route that accepts any method.
    const post = resolve(policy, { method: 'POST', path: '/v2/agent/status', subjects: { user: 'u' } });
    assert.equal(post.kind === 'resolved' && post.api?.name, 'Agent update');
    assert.deepEqual(post.kind === 'resolved' && post.params, { agent_id: 'status' });
  });

  test('specific rule beats the default; unknown names and paths fall to the default', () => {
    const named = resolve(policy, { api: 'Rows', subjects: { account: 'a', table: 't', user: 'u' } });
    assert.equal(named.kind === 'resolved' && `${named.rule.id}/${named.precedence}/${named.api?.name}`, 'data/rule-for-api/Row');
    assert.equal(named.kind === 'resolved' && named.shadow, true);
    const other = resolve(policy, { api: 'Nope', subjects: { user: 'u' } });
    assert.equal(other.kind === 'resolved' && `${other.rule.id}/${other.precedence}`, 'default/default');
    const path = resolve(policy, { method: 'GET', path: '/elsewhere', subjects: { user: 'u' } });
    assert.equal(path.kind === 'resolved' && path.rule.id, 'default');
  });

  test('subjects: the caller wins, then header, route parameter, query', () => {
    const r = resolve(policy, { method: 'GET', path: '/x?user=q', query: { user: 'from-query' }, subjects: {} });
    assert.deepEqual(r.kind === 'resolved' && r.scope, [{ subject: 'user', value: 'from-query' }]);
    const s = resolve(policy, { method: 'GET', path: '/x', query: { user: 'from-query' }, subjects: { user: 'given' } });
    assert.deepEqual(s.kind === 'resolved' && s.scope, [{ subject: 'user', value: 'given' }]);
  });

  test('overrides: runtime beats the policy file, which beats the rule', () => {
    const req = { api: 'Nope', subjects: { organization: 'big', user: 'u' } };
    const fromFile = resolve(policy, req);
    assert.equal(fromFile.kind === 'resolved' && fromFile.limitsFrom, 'policy-override');
    assert.equal(fromFile.kind === 'resolved' && fromFile.limits[0]!.limit, 1000);
    const runtime = new Map([[scopeKey('default', [{ subject: 'organization', value: 'big' }]), { unlimited: true, limits: [], reason: 'test' }]]);
    const r = resolve(policy, req, runtime);
    assert.equal(r.kind === 'resolved' && `${r.limitsFrom}/${r.unlimited}`, 'runtime-override/true');
  });

  test('a missing subject is a typed result naming what is missing', () => {
    const r = resolve(policy, { api: 'Table', subjects: { account: 'a', user: 'u' } });
    assert.deepEqual(r.kind === 'unresolved' && { reason: r.reason, missing: r.missing }, {
      reason: 'missing subject table (rule "data")',
      missing: ['table'],
    });
    const noTenant = resolve(policy, { api: 'Table', subjects: { account: 'a', table: 't' } });
    assert.deepEqual(noTenant.kind === 'unresolved' && noTenant.missing, ['organization|user']);
  });

  test('no default rule and no API: unresolved', () => {
    const p = compilePolicy(parsePolicy({ ...BASE, rules: BASE.rules.filter((r) => r.id !== 'default'), overrides: [] }));
    const r = resolve(p, { api: 'Nope', subjects: { user: 'u' } });
    assert.equal(r.kind, 'unresolved');
  });
});

describe('counter keys', () => {
  // Values that stress the layout: separators, hash-tag braces, globs, newlines, Unicode, lone surrogates, empty, 10 KB.
  const nasty = fc.oneof(
    fc.string(),
    fc.string({ unit: 'binary' }),
    fc.string({ unit: 'grapheme' }),
    fc.constantFrom('', ':', '{', '}', '*', '|', '=', '%', '%3A', '@api=x', 'a:b', '\n', '\uD800', '\uDC00x', 'x'.repeat(10_240), '{t}', 'é', '😀'),
    fc.array(fc.constantFrom(':', '{', '}', '=', '%', '@', 'a', '\n', '\uD83D', '\uDE00'), { maxLength: 12 }).map((a) => a.join('')),
  );
  const subjectName = fc.stringMatching(/^[a-z][a-z0-9_]{0,6}$/);
  const parts: fc.Arbitrary<CounterKeyParts> = fc.record(
    {
      tenant: fc.record({ subject: subjectName, value: nasty }),
      rule: nasty,
      api: fc.option(nasty, { nil: undefined }),
      scope: fc.array(fc.record({ subject: subjectName, value: nasty }), { minLength: 1, maxLength: 3 }),
    },
    { requiredKeys: ['tenant', 'rule', 'scope'] },
  );
  const normal = (p: CounterKeyParts): CounterKeyParts => {
    const plain: CounterKeyParts = { tenant: { ...p.tenant }, rule: p.rule, scope: p.scope.map((s) => ({ ...s })) };
    if (p.api !== undefined) plain.api = p.api;
    return plain;
  };

  test('components round-trip and never contain key syntax', () => {
    fc.assert(
      fc.property(nasty, (v) => {
        const e = encodeComponent(v);
        assert.equal(decodeComponent(e), v);
        assert.match(e, /^[A-Za-z0-9_.%-]*$/);
      }),
      { numRuns: 2000 },
    );
  });

  test('decoding a counter key gives back exactly what built it (so distinct inputs give distinct keys)', () => {
    fc.assert(
      fc.property(parts, (p) => {
        assert.deepEqual(decodeCounterKey(counterKey(p)), normal(p));
      }),
      { numRuns: 2000 },
    );
  });

  test('distinct inputs ⇒ distinct keys (pairwise)', () => {
    fc.assert(
      fc.property(parts, parts, (a, b) => {
        const same = JSON.stringify(normal(a)) === JSON.stringify(normal(b));
        assert.equal(counterKey(a) === counterKey(b), same);
      }),
      { numRuns: 2000 },
    );
  });

  test('the tenant part is safe inside a Redis Cluster hash tag', () => {
    fc.assert(
      fc.property(subjectName, nasty, (subject, value) => {
        const t = tenantKey({ subject, value });
        assert.ok(!t.includes('{') && !t.includes('}'));
        const key = counterKey({ tenant: { subject, value }, rule: 'r', scope: [{ subject, value }] });
        // Redis hashes the text between the first { and the next }: exactly the tenant key.
        assert.equal(key.slice(key.indexOf('{') + 1, key.indexOf('}')), t);
      }),
    );
  });

  test('resolution builds the same tenant, scope and counter keys as keys.ts, whatever the values', () => {
    const policy = compilePolicy(parsePolicy(BASE));
    fc.assert(
      fc.property(nasty, nasty, nasty, (org, account, table) => {
        for (const [request, rule] of [
          [{ api: 'Agent', subjects: { organization: org } }, 'agent'],
          [{ api: 'Table', subjects: { organization: org, account, table } }, 'data'],
          [{ api: 'Table', subjects: { organization: org, account: org, table: org } }, 'data'],
        ] as const) {
          const r = resolve(policy, request);
          assert.ok(r.kind === 'resolved' && r.rule.id === rule);
          assert.equal(r.tenantKey, tenantKey(r.tenant));
          assert.equal(r.scopeKey, scopeKey(rule, r.scope));
          assert.equal(r.counterKey, counterKey({ tenant: r.tenant, rule, scope: r.scope, ...(r.rule.perApi ? { api: r.api!.name } : {}) }));
        }
      }),
      { numRuns: 500 },
    );
  });

  test('resolution keys: distinct subject values never share a counter', () => {
    const policy = compilePolicy(parsePolicy(BASE));
    fc.assert(
      fc.property(nasty, nasty, fc.boolean(), fc.boolean(), (x, y, xOrg, yOrg) => {
        const req = (v: string, org: boolean) => ({ api: 'Agent', subjects: org ? { organization: v, user: 'u' } : { user: v } });
        const a = resolve(policy, req(x, xOrg));
        const b = resolve(policy, req(y, yOrg));
        assert.ok(a.kind === 'resolved' && b.kind === 'resolved');
        assert.equal(a.counterKey === b.counterKey, x === y && xOrg === yOrg);
      }),
      { numRuns: 1000 },
    );
  });
});
