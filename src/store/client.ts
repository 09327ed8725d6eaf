/**
 * The one place that constructs ioredis clients for quotaflow, with settings that suit a store whose
 * caller retries on its own: a call fails fast and clearly while Redis is away, and the connection
 * comes back by itself once Redis does.
 */
import { Cluster, Redis, type ClusterNode, type RedisOptions } from 'ioredis';
import { logger, type Logger } from '../log.ts';
import { unreachable } from './errors.ts';

export type RedisClient = Redis | Cluster;

export interface RedisClientOptions {
  /** ms to open a connection before the attempt counts as failed (default 2000). */
  connectTimeoutMs?: number;
  /** ms a command may wait for its reply, e.g. on a half-open socket (default 5000). */
  commandTimeoutMs?: number;
  log?: Logger;
}

function baseOptions(options: RedisClientOptions): RedisOptions {
  return {
    connectTimeout: options.connectTimeoutMs ?? 2_000,
    commandTimeout: options.commandTimeoutMs ?? 5_000,
    // While disconnected, fail a command at once instead of queueing it until a reconnect: the
    // aggregator pauses consumption and retries with backoff, so a queue would only hide the outage
    // and replay writes at an unknown later time. (RedisStore waits for the first connect itself.)
    enableOfflineQueue: false,
    // Never resend a command after a reconnect: whether it landed is unknown, and the caller decides
    // (the fences make its retry safe; ioredis's default of 20 retries makes a call hang for ~10 s+).
    maxRetriesPerRequest: 0,
    // Keep reconnecting in the background, backing off to one attempt a second.
    retryStrategy: (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 5), 1_000),
    // RedisStore pipelines explicitly: one pipeline per batch is already one round trip.
    enableAutoPipelining: false,
  };
}

/** Logs the first error of an outage as a warning and the retries of it at debug (ioredis emits one per attempt). */
function watch(client: RedisClient, log: Logger): void {
  let down = false;
  client.on('error', (e: Error) => {
    if (down) log.debug('redis still unreachable', { error: e });
    else log.warn('redis connection failed; reconnecting in the background', { error: e });
    down = true;
  });
  client.on('ready', () => {
    if (down) log.info('redis connection restored');
    down = false;
  });
}

/** A client for one Redis (`redis://[:password@]host:port[/db]`); it starts connecting at once. */
export function createRedisClient(url: string, options: RedisClientOptions = {}): Redis {
  const client = new Redis(url, baseOptions(options));
  watch(client, options.log ?? logger('redis'));
  return client;
}

/** A client for a Redis Cluster, with the same choices as createRedisClient. */
export function createRedisCluster(nodes: ClusterNode[], options: RedisClientOptions = {}): Cluster {
  const { retryStrategy: _perNode, ...redisOptions } = baseOptions(options);
  const client = new Cluster(nodes, {
    enableOfflineQueue: false,
    clusterRetryStrategy: (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 5), 1_000),
    redisOptions,
    // Slot moves are followed (MOVED/ASK) a few times, then the caller's retry takes over.
    maxRedirections: 4,
  });
  watch(client, options.log ?? logger('redis'));
  return client;
}

/**
 * Resolves once `client` is connected, or rejects with SERVICE_UNREACHABLE at the next connection
 * error, when the client was closed, or after `timeoutMs`. Commands are only sent to a ready client,
 * so a store call made while Redis is down fails within one reconnect attempt rather than hanging.
 */
export function whenReady(client: RedisClient, timeoutMs: number, what: string): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  if (client.status === 'end') return Promise.reject(unreachable(what, new Error('the Redis client was closed')));
  return new Promise<void>((resolve, reject) => {
    const done = (e?: unknown) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('error', onError);
      client.off('end', onEnd);
      if (e === undefined) resolve();
      else reject(unreachable(what, e));
    };
    const onReady = () => done();
    const onError = (e: unknown) => done(e);
    const onEnd = () => done(new Error('the Redis client was closed'));
    const timer = setTimeout(() => done(new Error(`not connected after ${timeoutMs} ms (status ${client.status})`)), timeoutMs);
    client.on('ready', onReady);
    client.on('error', onError);
    client.on('end', onEnd);
    if (client.status === 'wait') client.connect().catch(() => {}); // lazyConnect: the error arrives as an event
  });
}
