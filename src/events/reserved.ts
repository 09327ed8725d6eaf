/**
 * Object keys that are never data. JSON.parse makes `"__proto__"` an own property, zod's records skip
 * it without a word, and `obj[key] = value` with it replaces an object's prototype; `constructor` and
 * `prototype` are inherited by every plain object, so `key in obj` is true for them before anything is
 * written. Every reader of untrusted keys (usage events, policy files, the sidecar's subjects header)
 * rejects them with the path where they were found.
 */
export const RESERVED_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** The same rule as a regular expression, for key schemas (and so for the generated JSON Schemas). */
export const NOT_RESERVED_PATTERN = '^(?!(?:__proto__|constructor|prototype)$)';

export const isReservedKey = (key: string): boolean => RESERVED_KEYS.has(key);

/**
 * The path of the first reserved key in a parsed JSON value (objects and arrays, depth first), or
 * undefined when there is none. Own keys only, and the path is built only when one is found, so a
 * clean value costs one pass over its keys and allocates nothing.
 */
export function findReservedKey(value: unknown): PropertyKey[] | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findReservedKey(value[i]);
      if (found) return [i, ...found];
    }
    return undefined;
  }
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    if (RESERVED_KEYS.has(key)) return [key];
    const found = findReservedKey((value as Record<string, unknown>)[key]);
    if (found) return [key, ...found];
  }
  return undefined;
}
