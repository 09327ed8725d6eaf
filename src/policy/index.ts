/** The policy: schema, loading and validation, compilation, and resolution of requests to counters. */
export {
  ApiSchema,
  DurationSchema,
  HeaderFamilySchema,
  LimitSchema,
  PolicyOverrideSchema,
  PolicySchema,
  RefusalSchema,
  RuleSchema,
  ScopeSchema,
  SubjectNameSchema,
  SubjectSourceSchema,
  TenantSchema,
  WindowKindSchema,
  type Api,
  type HeaderFamily,
  type Limit,
  type Policy,
  type PolicyInput,
  type PolicyOverride,
  type Refusal,
  type Rule,
  type SubjectSource,
  type WindowKind,
} from './schema.ts';
export { formatDuration, tryParseDuration } from './duration.ts';
export { formatPath, parsePolicy, validatePolicy, type PolicyIssue, type PolicyValidation } from './validate.ts';
export { loadPolicyFile, parsePolicyText, validatePolicyText } from './load.ts';
export {
  compileLimit,
  compileOverride,
  compilePolicy,
  type CompiledApi,
  type CompiledLimit,
  type CompiledOverride,
  type CompiledPolicy,
  type CompiledRule,
} from './compile.ts';
export { resolve, type OverrideLookup, type Resolution, type Resolved, type ResolveRequest, type Unresolved } from './resolve.ts';
export {
  counterKey,
  decodeComponent,
  decodeCounterKey,
  decodeScopeKey,
  encodeComponent,
  scopeKey,
  tenantKey,
  type CounterKeyParts,
  type SubjectValue,
} from './keys.ts';
export { formatScope, parseScope, type Scope, type ScopePart } from './scope.ts';
