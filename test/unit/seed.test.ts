/**
 * Every row of every seed table and every behaviour the seed documents state, against the shipped
 * policy files. The API names and messages below are copied from the seed text, and the test checks
 * each string occurs verbatim in the documents kept in test/fixtures/seeds.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { loadShipped, mustResolve, seedText, Simulation } from './fixtures/simulate.ts';
import { resolve } from '../../src/policy/index.ts';

const T0 = Date.UTC(2024, 2, 22, 12, 0, 0); // a whole hour, so fixed and rolling windows start together
const SEC = 1000;
const MIN = 60 * SEC;

const seed001 = seedText('001_a20a4f11be1f3498.txt');
const seed000 = seedText('000_4484a1d7f565218f.txt');
const seed002 = seedText('002_1cd9d5f8e455ab2a.txt');
const seed003 = seedText('003_9c2cf9c54835d121.txt');
const seed004 = seedText('004_0a66da9ad9370d50.txt');

/** Seed 001, "Automation AI", API Rate Limit Matrix (one entry per group of each row). */
const AUTOMATION_ROWS: { level: string; rate: string; group: string; apis: string[] }[] = [
  {
    level: 'bot',
    rate: '60 per minute / 1800 per hour',
    group: 'Bot Definition APIs',
    apis: [
      'Upload File',
      'Import Bot as a New Bot',
      'Import Bot into an Existing Bot',
      'Import Bot Functions',
      'Install Sample Bot',
      'Bot Export',
      'Enable Channel',
      'Add and Enable a New Language',
      'Enable an existing Language',
      'Disable an existing Language',
      'Update a Language Configuration',
      'Publish Bot',
      'Bot Variables Import',
      'Batch Test Execution',
      'Get Batch Test Suites',
      'Export Batch Test Suite',
      'Import Batch Test Suite',
      'Delete Batch Test Suite',
      'Delete Batch Test Suite Execution',
      'Create (Import) a Conversation Test Suite',
      'Conversation Test Suite Execution',
      'Delete Conversation Test Suite',
    ],
  },
  {
    level: 'bot',
    rate: '60 per minute / 1800 per hour',
    group: 'NLP Training APIs',
    apis: [
      'ML Utterances Import',
      'ML Utterance Train',
      'ML Utterances Export',
      'FAQ Training',
      'Extraction from file or URL',
      'Get Extractions History',
      'Get Extraction Question',
      'Get Knowledge Tasks',
      'Add Questions from Extraction',
      'Get FAQs',
      'Update NLP Configurations',
    ],
  },
  {
    level: 'bot',
    rate: '60 per minute / 1800 per hour',
    group: 'Analytics APIs',
    apis: [
      'Find Intent',
      'Conversation History',
      'Conversation Summary',
      'Feedback Analytics',
      'Debug Logs',
      'Get ChangeLogs',
      'Sessions History',
      'Get Dashboard Widget Data',
      'Get Analytics',
      'User Engagement Trend',
      'Conversation Details and Summary',
    ],
  },
  {
    level: 'request_id',
    rate: '60 per minute / 1800 per hour',
    group: 'Bot Definition Status APIs',
    apis: [
      'Bot Import Status',
      'Bot Export Status',
      'Bot Publish Status',
      'Batch Test Execution Status',
      'Conversation Test Suite Creation Status',
      'Conversation Test Suite Execution Status',
    ],
  },
  {
    level: 'request_id',
    rate: '60 per minute / 1800 per hour',
    group: 'NLP Training Status APIs',
    apis: ['ML Utterances Import Status', 'ML Utterance Train Status', 'ML Utterances Export Status', 'FAQ Training Status'],
  },
  {
    level: 'account',
    rate: '60 per minute / 1800 per hour',
    group: 'Admin APIs',
    apis: [
      'Get Bots',
      'Import Roles',
      'Get Roles',
      'Get User Roles Details',
      'Get Groups',
      'Export Roles',
      'Assign BT Roles',
      'Assign Admin Roles',
      'Update User Access',
      'Create Users',
      'Get Users Information',
      'Update User',
      'Remove Users from Account',
      'Delete Customer Data',
      'Delete Customer Data Status API',
      'Get Admin Console Audit Logs',
    ],
  },
  {
    level: 'bot',
    rate: '600 per minute / 18000 per hour',
    group: 'Bot Definition Notification APIs',
    apis: ['Proactive Notification', 'Proactive Notification Status'],
  },
  {
    level: 'account+table',
    rate: '600 per minute / 18000 per hour',
    group: 'Data access APIs',
    apis: ['Insert Data', 'Insert Bulk Data', 'Update Data', 'Delete Data', 'Get Table Data', 'Get View Data'],
  },
];

const RATES: Record<string, [number, string][]> = {
  '60 per minute / 1800 per hour': [
    [60, '60s'],
    [1800, '1h'],
  ],
  '600 per minute / 18000 per hour': [
    [600, '60s'],
    [18000, '1h'],
  ],
  '60 per minute': [[60, '60s']],
};

const SUBJECTS = { account: 'acct-1', bot: 'st-bot-1', table: 'orders', request_id: 'ds-42' };

function assertRow(policyFile: Parameters<typeof loadShipped>[0], api: string, level: string, rate: string) {
  const policy = loadShipped(policyFile);
  const r = mustResolve(policy, { api, subjects: SUBJECTS });
  assert.equal(r.api?.name, api, `${api}: resolves to itself`);
  assert.equal(r.precedence, 'rule-for-api', `${api}: a rule names it`);
  assert.equal(r.rule.scopeText, level, `${api}: enforcement level`);
  assert.deepEqual(
    r.scope.map((s) => s.subject),
    level.split('+'),
    `${api}: counted per ${level}`,
  );
  assert.deepEqual(
    r.limits.map((l) => [l.limit, l.window]),
    RATES[rate],
    `${api}: ${rate}`,
  );
  assert.ok(
    r.limits.every((l) => l.kind === 'rolling'),
    `${api}: Kore limits are rolling`,
  );
}

describe('seed 001 — Kore.ai Automation AI matrix', () => {
  for (const row of AUTOMATION_ROWS) {
    for (const api of row.apis) {
      test(`${row.level} | ${row.rate} | ${row.group}: ${api}`, () => {
        assert.ok(seed001.includes(api), `"${api}" is spelled as in seed 001`);
        assertRow('kore-automation-ai.yaml', api, row.level, row.rate);
      });
    }
  }

  test('every API of the policy file is in the matrix (nothing invented)', () => {
    const policy = loadShipped('kore-automation-ai.yaml');
    const listed = new Set(AUTOMATION_ROWS.flatMap((r) => r.apis));
    assert.deepEqual(
      policy.apis.map((a) => a.name).filter((n) => !listed.has(n)),
      [],
    );
    assert.equal(policy.apis.length, listed.size);
  });

  test('Proactive Notification is bot level, 600 per minute', () => {
    const r = mustResolve(loadShipped('kore-automation-ai.yaml'), { api: 'Proactive Notification', subjects: SUBJECTS });
    assert.equal(r.rule.scopeText, 'bot');
    assert.equal(r.limits[0]!.limit, 600);
  });

  test('seed 002 spellings resolve to the same APIs', () => {
    const policy = loadShipped('kore-automation-ai.yaml');
    for (const [alias, api] of [
      ['Get KnowledgeTasks', 'Get Knowledge Tasks'],
      ['Bot Export – Status', 'Bot Export Status'],
    ] as const) {
      assert.ok(seed002.includes(alias), `"${alias}" is spelled as in seed 002`);
      assert.equal(mustResolve(policy, { api: alias, subjects: SUBJECTS }).api?.name, api);
    }
  });

  test('account+table: two tables of one account are counted apart', () => {
    const policy = loadShipped('kore-automation-ai.yaml');
    const a = mustResolve(policy, { api: 'Insert Data', subjects: { account: 'a1', table: 't1' } });
    const b = mustResolve(policy, { api: 'Insert Data', subjects: { account: 'a1', table: 't2' } });
    assert.notEqual(a.counterKey, b.counterKey);
    assert.equal(a.tenantKey, b.tenantKey, 'one tenant: both counters share a hash slot');
  });

  test('a missing subject is a typed result, not an exception', () => {
    const r = resolve(loadShipped('kore-automation-ai.yaml'), { api: 'Insert Data', subjects: { account: 'a1' } });
    assert.equal(r.kind, 'unresolved');
    assert.deepEqual(r.kind === 'unresolved' && r.missing, ['table']);
    assert.match(r.kind === 'unresolved' ? r.reason : '', /missing subject table/);
  });

  test('the 60th request in a rolling minute is admitted, the 61st refused, and room returns as the window rolls', () => {
    const sim = new Simulation(loadShipped('kore-automation-ai.yaml'));
    const req = { api: 'Bot Export', subjects: { account: 'a1', bot: 'b1' } };
    for (let i = 0; i < 60; i++) assert.equal(sim.send(req, T0 + i * SEC).admitted, true, `request ${i + 1}`);
    const refused = sim.send(req, T0 + 59 * SEC + 500);
    assert.equal(refused.admitted, false, 'the 61st request');
    assert.equal(!refused.admitted && refused.refusal.message, 'You’ve exceeded the per-minute rate limit. Please wait for sometime before retrying.');
    assert.equal(!refused.admitted && refused.refusal.status, 429);
    // Rolling: at T0+60s the request made at T0 has left the window.
    assert.equal(sim.send(req, T0 + 60 * SEC).admitted, true);
    assert.equal(sim.send(req, T0 + 60 * SEC + 1).admitted, false);
  });

  test('once the hourly limit is spent, requests are refused even while the minute has room', () => {
    const sim = new Simulation(loadShipped('kore-automation-ai.yaml'));
    const req = { api: 'Get Bots', subjects: { account: 'a1' } };
    // 30 a minute (half the minute limit) for 60 minutes = 1800 = the hourly limit.
    for (let m = 0; m < 60; m++) {
      for (let i = 0; i < 30; i++) assert.equal(sim.send(req, T0 + m * MIN + i * SEC).admitted, true, `minute ${m} request ${i}`);
    }
    const v = sim.send(req, T0 + 60 * MIN - SEC);
    assert.equal(v.admitted, false);
    assert.equal(!v.admitted && v.refusal.message, 'You’ve exceeded the hourly rate limit. Please wait for sometime before retrying.');
    const minute = !v.admitted ? v.refusal.blocking.windowMs : 0;
    assert.equal(minute, 3_600_000, 'the hour is the blocking limit');
  });

  test("messages are 001's, character for character; 002's wording is the fallback", () => {
    const policy = loadShipped('kore-automation-ai.yaml');
    const perMinute = 'You’ve exceeded the per-minute rate limit. Please wait for sometime before retrying.';
    const hourly = 'You’ve exceeded the hourly rate limit. Please wait for sometime before retrying.';
    const generic = 'Rate limit for this API has been reached. Please try again after some time.';
    for (const m of [perMinute, hourly]) assert.ok(seed001.includes(`“${m}”`));
    assert.ok(seed002.includes(`“${generic}”`));
    assert.deepEqual(policy.refusal.messages, { '60s': perMinute, '1h': hourly });
    assert.equal(policy.refusal.message, generic);
  });
});

const CCAI_APIS = [
  'Analytics and Reporting APIs',
  'Agent Creation APIs',
  'Skills APIs',
  'Skill Group APIs',
  'Agent Group APIs',
  'Contacts Public APIs',
  'Import/Export Data APIs',
  'Transfer Conversation APIs',
  'Queue Management APIs',
  'WFM APIs',
  'Hours of Operation API',
  'Voice Gateway APIs',
  'Campaign Management APIs',
];

describe('seed 000 — Kore.ai Contact Center AI matrix', () => {
  for (const api of CCAI_APIS) {
    test(`account | 60 per minute: ${api}`, () => {
      assert.ok(seed000.includes(`**${api}**`), `"${api}" is spelled as in seed 000`);
      assert.ok(seed001.includes(api), `"${api}" is spelled as in seed 001`);
      assertRow('kore-contact-center-ai.yaml', api, 'account', '60 per minute');
    });
  }
  test('other Contact Center APIs ("see the full list") fall to the default: account, 60 per minute', () => {
    const r = mustResolve(loadShipped('kore-contact-center-ai.yaml'), { api: 'Some Other Contact Center API', subjects: { account: 'a1' } });
    assert.equal(r.precedence, 'default');
    assert.deepEqual(
      r.limits.map((l) => [l.limit, l.window]),
      [[60, '60s']],
    );
  });
  test('message follows seed 000 (straight apostrophe)', () => {
    const m = "You've exceeded the per-minute rate limit. Please wait for sometime before retrying.";
    assert.ok(seed000.includes(`*"${m}"*`));
    const sim = new Simulation(loadShipped('kore-contact-center-ai.yaml'));
    const req = { api: 'WFM APIs', subjects: { account: 'a1' } };
    for (let i = 0; i < 60; i++) assert.equal(sim.send(req, T0 + i).admitted, true);
    const v = sim.send(req, T0 + 60);
    assert.equal(!v.admitted && v.refusal.body, m);
  });
});

describe('seed 001 — Kore.ai Case Management and Quality AI matrices', () => {
  for (const api of ['Create Case', 'Get Cases', 'Update Case', 'Create Task', 'Get Tasks', 'Update Task']) {
    test(`Case Management | account | 60 per minute: ${api}`, () => {
      assert.ok(seed001.includes(api));
      assertRow('kore-case-management.yaml', api, 'account', '60 per minute');
    });
  }
  for (const api of ['Raw Data API', 'Auto QA Reporting API']) {
    test(`Quality AI | account | 60 per minute: ${api}`, () => {
      assert.ok(seed001.includes(api));
      assertRow('kore-quality-ai.yaml', api, 'account', '60 per minute');
    });
  }
  test("the 61st request of an account in a minute is refused with 001's per-minute message", () => {
    for (const [file, api] of [
      ['kore-case-management.yaml', 'Get Cases'],
      ['kore-quality-ai.yaml', 'Raw Data API'],
    ] as const) {
      const sim = new Simulation(loadShipped(file));
      const req = { api, subjects: { account: 'a1' } };
      for (let i = 0; i < 60; i++) assert.equal(sim.send(req, T0 + i * 500).admitted, true);
      const v = sim.send(req, T0 + 59_999);
      assert.equal(!v.admitted && v.refusal.body, 'You’ve exceeded the per-minute rate limit. Please wait for sometime before retrying.');
    }
  });
});

describe('seed 003 — Bolna', () => {
  const ENDPOINTS = ['/v2/agent/{agent_id}/executions', '/v2/agent/{agent_id}', '/call'];
  const policy = loadShipped('bolna.yaml');

  for (const endpoint of ENDPOINTS) {
    test(`${endpoint} | 500 requests/minute`, () => {
      assert.ok(seed003.includes(`[${endpoint}]`));
      const path = endpoint.replace('{agent_id}', 'a-123');
      for (const method of ['GET', 'POST', 'DELETE']) {
        const r = mustResolve(policy, { method, path, subjects: { user: 'u1' } });
        assert.equal(r.api?.name, endpoint);
        assert.equal(r.rule.id, 'endpoint');
        assert.deepEqual(
          r.limits.map((l) => [l.limit, l.window]),
          [[500, '60s']],
        );
      }
    });
  }
  test('route parameters are read from the path', () => {
    assert.deepEqual(mustResolve(policy, { method: 'GET', path: '/v2/agent/a-9/executions?page=2', subjects: { user: 'u' } }).params, { agent_id: 'a-9' });
  });
  test('all other endpoints: the default, 1000 requests per minute', () => {
    for (const path of ['/v2/agent', '/batches', '/v2/agent/a/executions/e/extra', '/']) {
      const r = mustResolve(policy, { method: 'GET', path, subjects: { user: 'u1' } });
      assert.equal(r.precedence, 'default', path);
      assert.deepEqual(
        r.limits.map((l) => [l.limit, l.window]),
        [[1000, '60s']],
      );
    }
  });
  test('members of an organization share one counter; users outside one get their own', () => {
    const req = (subjects: Record<string, string>) => ({ method: 'POST', path: '/call', subjects });
    const alice = mustResolve(policy, req({ organization: 'org-1', user: 'alice' }));
    const bob = mustResolve(policy, req({ organization: 'org-1', user: 'bob' }));
    const carol = mustResolve(policy, req({ user: 'carol' }));
    const dave = mustResolve(policy, req({ user: 'dave' }));
    assert.equal(alice.counterKey, bob.counterKey);
    assert.notEqual(carol.counterKey, dave.counterKey);
    assert.notEqual(alice.counterKey, carol.counterKey);
    // A user id equal to an organization id is still another counter.
    assert.notEqual(mustResolve(policy, req({ user: 'org-1' })).counterKey, alice.counterKey);

    const sim = new Simulation(policy);
    for (let i = 0; i < 250; i++) {
      assert.equal(sim.send(req({ organization: 'org-1', user: 'alice' }), T0 + i).admitted, true);
      assert.equal(sim.send(req({ organization: 'org-1', user: 'bob' }), T0 + i).admitted, true);
    }
    const v = sim.send(req({ organization: 'org-1', user: 'erin' }), T0 + 300);
    assert.equal(v.admitted, false, 'the organization spent its 500 together');
    assert.equal(!v.admitted && v.refusal.status, 429);
    assert.equal(sim.send(req({ user: 'carol' }), T0 + 300).admitted, true, 'a user outside the organization is unaffected');
  });
  test("each named endpoint has its own 500, apart from the default's 1000", () => {
    const keys = ENDPOINTS.map((e) => mustResolve(policy, { path: e.replace('{agent_id}', 'x'), subjects: { user: 'u' } }).counterKey);
    keys.push(mustResolve(policy, { path: '/other', subjects: { user: 'u' } }).counterKey);
    assert.equal(new Set(keys).size, 4);
  });
  test('HTTP 429 (Too Many Requests)', () => {
    assert.ok(seed003.includes('**HTTP 429 (Too Many Requests)**'));
    assert.equal(policy.refusal.status, 429);
  });
});

describe('seed 004 — TalkPilot', () => {
  const policy = loadShipped('talkpilot.yaml');
  const req = (key: string) => ({ method: 'GET', path: '/agents', headers: { 'x-api-key': key } });

  test('default limits: 60 per minute and 1,000 per hour, per API key from X-API-Key', () => {
    assert.ok(seed004.includes('| Per minute | 60 requests    |') && seed004.includes('| Per hour   | 1,000 requests |'));
    const r = mustResolve(policy, req('tp_a'));
    assert.deepEqual(
      r.limits.map((l) => [l.limit, l.window]),
      [
        [60, '60s'],
        [1000, '1h'],
      ],
    );
    assert.deepEqual(r.scope, [{ subject: 'api_key', value: 'tp_a' }]);
    assert.notEqual(r.counterKey, mustResolve(policy, req('tp_b')).counterKey, 'per key, not shared');
  });
  test('a key created with custom limits gets them; an unlimited key is never limited', () => {
    const custom = mustResolve(policy, req('tp_live_example_high_volume'));
    assert.equal(custom.limitsFrom, 'policy-override');
    assert.deepEqual(
      custom.limits.map((l) => [l.limit, l.window]),
      [
        [300, '60s'],
        [10000, '1h'],
      ],
    );
    const sim = new Simulation(policy);
    for (let i = 0; i < 300; i++) assert.equal(sim.send(req('tp_live_example_high_volume'), T0 + i).admitted, true);
    assert.equal(sim.send(req('tp_live_example_high_volume'), T0 + 400).admitted, false);
    const internal = mustResolve(policy, req('tp_live_example_internal'));
    assert.equal(internal.unlimited, true);
    for (let i = 0; i < 2000; i++) assert.equal(sim.send(req('tp_live_example_internal'), T0 + i).admitted, true);
  });
  test('the 61st request in the minute is refused, with the documented headers and body', () => {
    const sim = new Simulation(policy);
    const start = 1711108860_000; // the minute that resets at 1711108920 (the seed's example)
    for (let i = 0; i < 60; i++) assert.equal(sim.send(req('tp_k'), start + i * 700).admitted, true);
    const v = sim.send(req('tp_k'), 1711108902_000);
    assert.equal(v.admitted, false);
    if (v.admitted) return;
    assert.equal(v.refusal.status, 429);
    assert.deepEqual(v.refusal.headers, {
      'Retry-After': '18',
      'X-RateLimit-Limit': '60',
      'X-RateLimit-Remaining': '0',
      'X-RateLimit-Reset': '1711108920',
    });
    assert.equal(v.refusal.message, 'Rate limit exceeded. Try again in 18 seconds.');
    // Fixed window: the next minute starts afresh.
    assert.equal(sim.send(req('tp_k'), 1711108920_000).admitted, true);
  });
  test('the hourly limit refuses while the minute has room', () => {
    const sim = new Simulation(policy);
    for (let m = 0; m < 20; m++) for (let i = 0; i < 50; i++) assert.equal(sim.send(req('tp_h'), T0 + m * MIN + i).admitted, true);
    const v = sim.send(req('tp_h'), T0 + 20 * MIN);
    assert.equal(v.admitted, false);
    assert.equal(!v.admitted && v.refusal.headers['Retry-After'], String(40 * 60), 'until the fixed hour ends');
  });
  test('a request without X-API-Key cannot be counted: unresolved', () => {
    const r = resolve(policy, { method: 'GET', path: '/agents', headers: {} });
    assert.equal(r.kind, 'unresolved');
    assert.deepEqual(r.kind === 'unresolved' && r.missing, ['api_key']);
  });
});
