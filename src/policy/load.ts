/**
 * Reading a policy file: the only I/O of the policy module. YAML and JSON are both read with the
 * yaml package (JSON is YAML); syntax errors are reported like field errors, with line and column.
 */
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { QuotaflowError } from '../errors.ts';
import { policyInvalid, validatePolicy, type PolicyValidation } from './validate.ts';
import type { Policy } from './schema.ts';

/** Parses and validates policy text; never throws. */
export function validatePolicyText(text: string): PolicyValidation {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    // prettyErrors appends "at line L, column C:" and a source excerpt; keep the first line.
    return { ok: false, issues: doc.errors.map((e) => ({ path: '', message: `YAML: ${e.message.split('\n')[0]!.replace(/:$/, '')}` })) };
  }
  return validatePolicy(doc.toJS());
}

export function parsePolicyText(text: string, source = 'policy'): Policy {
  const result = validatePolicyText(text);
  if (!result.ok) throw policyInvalid(source, result.issues);
  return result.policy;
}

/** Reads, parses and validates a policy file; throws QuotaflowError('POLICY_INVALID') with every problem. */
export async function loadPolicyFile(path: string): Promise<Policy> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    throw new QuotaflowError('POLICY_INVALID', `cannot read policy file ${path}`, {
      cause,
      hint: 'check the path',
      details: { source: path, issues: [{ path: '', message: (cause as Error).message }] },
    });
  }
  return parsePolicyText(text, path);
}
