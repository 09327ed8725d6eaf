/**
 * Every Redis key quotaflow writes, built in one place. A tenant's keys all carry the tenant as a
 * Redis Cluster hash tag, so one script can touch the fence and every counter of the tenant:
 *
 *   <prefix>c:{api_key=k1}:rule=per-key:api_key=k1   counter hash (the counter key already starts with the tag)
 *   <prefix>f:{api_key=k1}                           fence hash: Kafka partition → highest applied offset
 *
 * The prefix may not contain `{` or `}`: a brace before the counter key's would move the hash tag
 * off the tenant and split a tenant's keys over several slots.
 */
import { QuotaflowError } from '../errors.ts';

const PREFIX = /^[A-Za-z0-9_.:-]+$/;

export class StoreKeys {
  readonly prefix: string;
  readonly #counterPrefix: string;
  readonly #fencePrefix: string;

  /** `prefix` is prepended as is: end it with a separator (`qf:`). Allowed: letters, digits, `_ . : -`. */
  constructor(prefix: string) {
    if (!PREFIX.test(prefix)) {
      throw new QuotaflowError('CONFIG_INVALID', `invalid Redis key prefix ${JSON.stringify(prefix)}`, {
        hint: 'use a non-empty prefix of letters, digits and _ . : - (no braces: they would change the cluster hash tag), e.g. "qf:"',
        details: { prefix },
      });
    }
    this.prefix = prefix;
    this.#counterPrefix = `${prefix}c:`;
    this.#fencePrefix = `${prefix}f:{`;
  }

  /** The counter hash of `counterKey` (which must begin with its tenant's hash tag, `{tenant}`). */
  counter(counterKey: string): string {
    assertCounterKey(counterKey);
    return this.#counterPrefix + counterKey;
  }

  /** The fence hash of a tenant: field = Kafka partition, value = highest applied usage offset. */
  fence(tenantKey: string): string {
    assertTenantKey(tenantKey);
    return `${this.#fencePrefix}${tenantKey}}`;
  }
}

/** A tenant key is the hash tag's content: non-empty and brace-free, or the tag would not be the tenant. */
export function assertTenantKey(tenantKey: string): void {
  if (tenantKey.length === 0 || tenantKey.includes('{') || tenantKey.includes('}')) {
    throw new RangeError(`not a tenant key (empty, or contains a brace): ${JSON.stringify(tenantKey.slice(0, 200))}`);
  }
}

function assertCounterKey(counterKey: string): void {
  const close = counterKey.indexOf('}');
  if (counterKey[0] !== '{' || close < 2) {
    throw new RangeError(`not a counter key (must begin with {tenant}): ${JSON.stringify(counterKey.slice(0, 200))}`);
  }
}

/** Whether `counterKey` belongs to `tenantKey`, i.e. shares its hash slot. */
export function counterOfTenant(counterKey: string, tenantKey: string): boolean {
  return counterKey.length > tenantKey.length + 1 && counterKey[0] === '{' && counterKey[tenantKey.length + 1] === '}' && counterKey.startsWith(tenantKey, 1);
}
