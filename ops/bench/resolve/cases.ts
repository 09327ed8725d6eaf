/** Each shipped policy's mix of realistic requests: named APIs, routes, headers and subjects. */
import type { ResolveRequest } from '../../../src/policy/index.ts';

export const CASES: Record<string, ResolveRequest[]> = {
  'kore-automation-ai.yaml': [
    { api: 'Bot Export', subjects: { account: 'acct-1', bot: 'st-8a7c' } },
    { api: 'Insert Data', subjects: { account: 'acct-1', table: 'orders' } },
    { api: 'Bot Export Status', subjects: { account: 'acct-2', request_id: 'ds-1f2e' } },
    { api: 'Get Bots', subjects: { account: 'acct:with:colons' } },
  ],
  'kore-contact-center-ai.yaml': [
    { api: 'WFM APIs', subjects: { account: 'acct-1' } },
    { api: 'Unlisted API', subjects: { account: 'acct-2' } },
  ],
  'kore-case-management.yaml': [{ api: 'Create Case', subjects: { account: 'acct-1' } }],
  'kore-quality-ai.yaml': [{ api: 'Raw Data API', subjects: { account: 'acct-1' } }],
  'bolna.yaml': [
    { method: 'GET', path: '/v2/agent/3c90c3cc-0d44/executions?page=2', subjects: { organization: 'org-1', user: 'u-1' } },
    { method: 'POST', path: '/call', subjects: { user: 'u-2' } },
    { method: 'GET', path: '/batches/42', subjects: { organization: 'org-2', user: 'u-3' } },
  ],
  'talkpilot.yaml': [
    { method: 'GET', path: '/agents', headers: { 'x-api-key': 'tp_live_4f9a8b' } },
    { method: 'PUT', path: '/forwarding-slots', headers: { 'x-api-key': 'tp_live_example_high_volume' } },
  ],
};
