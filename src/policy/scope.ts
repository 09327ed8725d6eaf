/**
 * Scope expressions. `account+table` is a composite key of two parts; `organization|user` is one part
 * whose value is the first subject present. `|` binds tighter than `+`, so `account+organization|user`
 * is two parts: account, and organization-else-user.
 */

/** One part of a key: a fallback chain of subjects, first present wins. */
export type ScopePart = readonly string[];
export type Scope = readonly ScopePart[];

/** Splits a scope expression (already shape-checked by ScopeSchema). */
export function parseScope(text: string): Scope {
  return text.split('+').map((part) => part.split('|'));
}

export function formatScope(scope: Scope): string {
  return scope.map((part) => part.join('|')).join('+');
}
