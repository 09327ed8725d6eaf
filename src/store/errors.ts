/**
 * Turns whatever ioredis throws into a QuotaflowError, in one place. Connection trouble and the
 * replies Redis gives while it cannot serve (loading, failing over, out of memory) are
 * SERVICE_UNREACHABLE; a connected Redis that does not answer in time is TIMEOUT. Both are
 * retriable: the aggregator pauses and retries with backoff. Any other error reply means Redis
 * refuses what we ask (a key of the wrong type under our prefix, an ACL): retrying will not help.
 */
import { QuotaflowError } from '../errors.ts';

const TRANSIENT_REPLY = /^(LOADING|BUSY|TRYAGAIN|CLUSTERDOWN|MASTERDOWN|READONLY|NOREPLICAS|OOM|MOVED|ASK)\b/;

export function isReplyError(e: unknown): e is Error {
  return e instanceof Error && e.name === 'ReplyError';
}

export function unreachable(what: string, cause: unknown): QuotaflowError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new QuotaflowError('SERVICE_UNREACHABLE', `Redis is unreachable: ${what} failed (${reason})`, {
    retriable: true,
    cause,
    hint: 'check that Redis is running and REDIS_URL points at it; the aggregator retries with backoff',
  });
}

/** Connected, but no reply in time (Redis frozen, overloaded, or a half-open socket). */
export function noReply(what: string, cause: Error): QuotaflowError {
  return new QuotaflowError('TIMEOUT', `Redis did not answer in time: ${what} (${cause.message})`, {
    retriable: true,
    cause,
    hint: 'Redis is stalled, overloaded or the network is slow; the write may still land, and its fence makes a retry safe',
  });
}

/** `what`: the operation, for the message ("apply 120 tenants"). */
export function toStoreError(e: unknown, what: string): QuotaflowError {
  if (e instanceof QuotaflowError) return e;
  if (isReplyError(e) && !TRANSIENT_REPLY.test(e.message)) {
    return new QuotaflowError('CONFIG_INVALID', `Redis refused ${what}: ${e.message}`, {
      retriable: false,
      cause: e,
      hint: 'check that no other application writes under the store key prefix and that the Redis user may run EVALSHA on these keys',
    });
  }
  if (e instanceof Error && e.message === 'Command timed out') return noReply(what, e); // ioredis commandTimeout
  // Not an error reply: the socket, retries used up, no cluster node answering.
  return unreachable(what, e);
}
