/**
 * The store's Lua scripts, BullMQ-style: one file per script under ./lua, named
 * `<verb><Noun>-<numKeys>.lua` (`-n`: the key count is passed at call time), each opening with a
 * comment that lists its KEYS, ARGV and return value. Shared Lua lives under ./lua/includes and is
 * pulled in by a `--- @include "includes/<name>"` line, once per script, instead of being pasted.
 *
 * Scripts are read once at start-up and registered with ioredis `defineCommand` under a name that
 * carries the package version (`qf_0_1_0_applyUsage`), so two versions sharing one Redis never run
 * each other's scripts. Their replies become typed results in `applyUsageResult`, the one place
 * that knows what the codes mean.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'ioredis';
import type { TenantApplyResult } from './types.ts';

export interface ScriptSource {
  /** `applyUsage` for `applyUsage-n.lua`. */
  readonly name: string;
  /** From the file name; undefined for `-n` (the caller passes the count first). */
  readonly numberOfKeys: number | undefined;
  /** The script with its includes inlined. */
  readonly lua: string;
}

const LUA_DIR = new URL('./lua/', import.meta.url);
const SCRIPT_FILE = /^([a-z][A-Za-z0-9]*)-(\d+|n)\.lua$/;
const INCLUDE = /^---\s*@include\s+"([A-Za-z0-9_/-]+)"[ \t]*$/gm;

function readPackageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  if (typeof pkg.version !== 'string' || pkg.version === '') throw new Error('package.json has no version');
  return pkg.version;
}

export const PACKAGE_VERSION = readPackageVersion();

/** The name a script is registered under: `qf_<version with _ for . and ->_<script>`. */
export function commandName(script: string): string {
  return `qf_${PACKAGE_VERSION.replace(/[^A-Za-z0-9]/g, '_')}_${script}`;
}

function inlineIncludes(lua: string, file: string, seen: Set<string>, stack: readonly string[]): string {
  return lua.replace(INCLUDE, (_line, name: string) => {
    if (stack.includes(name)) throw new Error(`Lua include cycle: ${[...stack, name].join(' → ')} (in ${file})`);
    if (seen.has(name)) return `-- (${name} already included)`;
    seen.add(name);
    const body = readFileSync(new URL(`${name}.lua`, LUA_DIR), 'utf8');
    return inlineIncludes(body, `${name}.lua`, seen, [...stack, name]).trimEnd();
  });
}

let cached: readonly ScriptSource[] | undefined;

/** Every script under ./lua, includes inlined; read from disk on the first call only. */
export function loadScripts(): readonly ScriptSource[] {
  if (cached) return cached;
  const out: ScriptSource[] = [];
  for (const file of readdirSync(LUA_DIR).sort()) {
    if (!file.endsWith('.lua')) continue;
    const m = SCRIPT_FILE.exec(file);
    if (!m) throw new Error(`Lua script ${file} is not named <verb><Noun>-<numKeys>.lua`);
    const lua = inlineIncludes(readFileSync(new URL(file, LUA_DIR), 'utf8'), file, new Set(), []);
    out.push({ name: m[1]!, numberOfKeys: m[2] === 'n' ? undefined : Number(m[2]), lua });
  }
  cached = out;
  return out;
}

/** Registers every script on `client` (idempotent; a pipeline of the client gets them too). */
export function registerScripts(client: Redis | Cluster): void {
  for (const s of loadScripts()) {
    const name = commandName(s.name);
    if (name in client) continue;
    client.defineCommand(name, s.numberOfKeys === undefined ? { lua: s.lua } : { lua: s.lua, numberOfKeys: s.numberOfKeys });
  }
}

/** Return codes of applyUsage-n.lua (see its header). */
export const APPLY_USAGE = { applied: 1, alreadyApplied: 0, conflict: -1, badArguments: -2 } as const;

/** applyUsage's `{code, fence}` reply as a result; a code that means a bug becomes an Error. */
export function applyUsageResult(tenantKey: string, reply: unknown): TenantApplyResult {
  const [code, fence] = Array.isArray(reply) ? (reply as unknown[]) : [];
  if (typeof code !== 'number' || typeof fence !== 'number') {
    throw new Error(`applyUsage for ${tenantKey} replied ${JSON.stringify(reply)}, not {code, fence}`);
  }
  switch (code) {
    case APPLY_USAGE.applied:
      return { tenantKey, status: 'applied', fence };
    case APPLY_USAGE.alreadyApplied:
      return { tenantKey, status: 'already-applied', fence };
    case APPLY_USAGE.conflict:
      return { tenantKey, status: 'conflict', fence: fence < 0 ? null : fence };
    case APPLY_USAGE.badArguments:
      throw new Error(`store bug: applyUsage for ${tenantKey} got ARGV that does not match its KEYS (at ARGV[${fence}]); nothing was written`);
    default:
      throw new Error(`applyUsage for ${tenantKey} replied with unknown code ${code}`);
  }
}
