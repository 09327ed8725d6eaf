/**
 * Counter keys. A key names one counter: the tenant (as a Redis Cluster hash tag), the rule, the API
 * when the rule counts APIs separately, and the value of each part of the rule's scope:
 *
 *   {organization=org_1}:rule=default:organization=org_1
 *   {account=a1}:rule=data-access:account=a1:table=orders:@api=Insert%20Data
 *
 * Every value is escaped so the layout stays unambiguous whatever the value holds: bytes outside
 * [A-Za-z0-9_.-] become %XX of their UTF-8 encoding (lone UTF-16 surrogates as their 3-byte
 * generalised UTF-8 form, which valid UTF-8 never produces). Escaped values therefore never contain
 * `:`, `=`, `{`, `}`, `*`, `|`, `@` or whitespace, and decoding gives back the exact string, which is
 * what makes the encoding injective. Subject names are [a-z][a-z0-9_]*, so the `@api` marker can never
 * be mistaken for a subject.
 */

const SAFE = /^[A-Za-z0-9_.-]*$/;
const HEX = '0123456789ABCDEF';

function pushByte(out: string[], byte: number): void {
  out.push('%', HEX[byte >> 4]!, HEX[byte & 15]!);
}

/** Escapes one key component (see the module comment). Plain ids are returned as they are. */
export function encodeComponent(value: string): string {
  if (SAFE.test(value)) return value;
  const out: string[] = [];
  for (let i = 0; i < value.length; i++) {
    const unit = value.charCodeAt(i);
    if ((unit >= 48 && unit <= 57) || (unit >= 65 && unit <= 90) || (unit >= 97 && unit <= 122) || unit === 95 || unit === 46 || unit === 45) {
      out.push(value[i]!);
      continue;
    }
    // codePointAt pairs a valid surrogate pair and returns a lone surrogate as itself.
    const cp = value.codePointAt(i)!;
    if (cp > 0xffff) i++;
    if (cp < 0x80) pushByte(out, cp);
    else if (cp < 0x800) {
      pushByte(out, 0xc0 | (cp >> 6));
      pushByte(out, 0x80 | (cp & 63));
    } else if (cp < 0x10000) {
      pushByte(out, 0xe0 | (cp >> 12));
      pushByte(out, 0x80 | ((cp >> 6) & 63));
      pushByte(out, 0x80 | (cp & 63));
    } else {
      pushByte(out, 0xf0 | (cp >> 18));
      pushByte(out, 0x80 | ((cp >> 12) & 63));
      pushByte(out, 0x80 | ((cp >> 6) & 63));
      pushByte(out, 0x80 | (cp & 63));
    }
  }
  return out.join('');
}

/** Inverse of encodeComponent; throws on text encodeComponent cannot produce. */
export function decodeComponent(text: string): string {
  if (!text.includes('%')) {
    if (!SAFE.test(text)) throw new Error(`not an encoded key component: ${JSON.stringify(text)}`);
    return text;
  }
  let out = '';
  let i = 0;
  const byte = (): number => {
    if (text[i] !== '%') throw new Error(`truncated escape in key component at ${i}`);
    const b = parseInt(text.slice(i + 1, i + 3), 16);
    if (Number.isNaN(b)) throw new Error(`bad escape in key component at ${i}`);
    i += 3;
    return b;
  };
  while (i < text.length) {
    if (text[i] !== '%') {
      out += text[i];
      i++;
      continue;
    }
    const b0 = byte();
    let cp: number;
    if (b0 < 0x80) cp = b0;
    else if (b0 >= 0xf0) cp = ((b0 & 7) << 18) | ((byte() & 63) << 12) | ((byte() & 63) << 6) | (byte() & 63);
    else if (b0 >= 0xe0) cp = ((b0 & 15) << 12) | ((byte() & 63) << 6) | (byte() & 63);
    else cp = ((b0 & 31) << 6) | (byte() & 63);
    out += String.fromCodePoint(cp);
  }
  return out;
}

export interface SubjectValue {
  subject: string;
  value: string;
}

export interface CounterKeyParts {
  tenant: SubjectValue;
  rule: string;
  /** The API, when the rule counts each API separately (per_api). */
  api?: string;
  /** One subject/value per scope part, in scope order. */
  scope: SubjectValue[];
}

/** `subject=value`: the tenant as a Kafka key and inside a Redis hash tag (never contains `{` or `}`). */
export function tenantKey(tenant: SubjectValue): string {
  return `${tenant.subject}=${encodeComponent(tenant.value)}`;
}

/** `rule=<id>:<subject>=<value>...`: the key of an override (it applies to every API of the rule). */
export function scopeKey(rule: string, scope: readonly SubjectValue[]): string {
  let key = `rule=${encodeComponent(rule)}`;
  for (const part of scope) key += `:${part.subject}=${encodeComponent(part.value)}`;
  return key;
}

export function counterKey(parts: CounterKeyParts): string {
  return counterKeyOf(tenantKey(parts.tenant), scopeKey(parts.rule, parts.scope), parts.api === undefined ? undefined : encodeComponent(parts.api));
}

/** counterKey from its already-encoded pieces (the request path reuses the scope key it computed). */
export function counterKeyOf(tenantKeyText: string, scopeKeyText: string, encodedApi: string | undefined): string {
  return encodedApi === undefined ? `{${tenantKeyText}}:${scopeKeyText}` : `{${tenantKeyText}}:${scopeKeyText}:@api=${encodedApi}`;
}

function splitPair(text: string): SubjectValue {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new Error(`not a subject=value pair: ${JSON.stringify(text)}`);
  return { subject: text.slice(0, eq), value: decodeComponent(text.slice(eq + 1)) };
}

/** Inverse of scopeKey: `rule=per-key:api_key=k1` → rule and scope; throws on a string scopeKey cannot produce. */
export function decodeScopeKey(key: string): { rule: string; scope: SubjectValue[] } {
  const fields = key.split(':');
  const first = fields.shift();
  if (first === undefined || !first.startsWith('rule=') || first.length === 5)
    throw new Error(`not a scope key (rule=<id>:<subject>=<value>...): ${JSON.stringify(key)}`);
  return { rule: decodeComponent(first.slice(5)), scope: fields.map(splitPair) };
}

/** Inverse of counterKey (for audits and `explain`); throws on a string counterKey cannot produce. */
export function decodeCounterKey(key: string): CounterKeyParts {
  const close = key.indexOf('}');
  if (!key.startsWith('{') || close === -1 || key[close + 1] !== ':') throw new Error(`not a counter key: ${JSON.stringify(key)}`);
  const tenant = splitPair(key.slice(1, close));
  const fields = key.slice(close + 2).split(':');
  const first = fields.shift();
  if (first === undefined || !first.startsWith('rule=')) throw new Error(`counter key without a rule: ${JSON.stringify(key)}`);
  const parts: CounterKeyParts = { tenant, rule: decodeComponent(first.slice(5)), scope: [] };
  if (fields.at(-1)?.startsWith('@api=')) parts.api = decodeComponent(fields.pop()!.slice(5));
  parts.scope = fields.map(splitPair);
  return parts;
}
