/**
 * A real redis-server (the Debian package) on a free loopback port, keeping nothing on disk.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection } from 'node:net';
import { QuotaflowError } from '../errors.ts';
import { logger, type Logger } from '../log.ts';
import { freePort, isPortFree } from './ports.ts';
import { checkRedisServer, type Programs } from './prereqs.ts';
import { startManaged, type ManagedProcess } from './process.ts';

export interface LocalRedis {
  readonly url: string;
  readonly port: number;
  readonly version: string;
  readonly process: ManagedProcess;
  stop(): Promise<void>;
}

/** PING over a raw socket, so the stack layer needs no Redis client. */
export function redisPing(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

export async function startLocalRedis(options: { programs: Programs; port?: number; log?: Logger; startTimeoutMs?: number }): Promise<LocalRedis> {
  const log = options.log ?? logger('stack.redis');
  const version = await checkRedisServer(options.programs.redisServer);
  if (options.port !== undefined && !(await isPortFree(options.port))) {
    throw new QuotaflowError('PORT_IN_USE', `port ${options.port} on 127.0.0.1 is already taken, so the local redis-server cannot listen there.`, {
      hint: `stop whatever listens on ${options.port} (\`ss -ltnp 'sport = :${options.port}'\` shows it), or let quotaflow pick a free port`,
    });
  }
  const port = options.port ?? (await freePort());
  const dir = await mkdtemp(join(tmpdir(), 'quotaflow-redis-'));
  const logFile = join(dir, 'redis.log');
  const proc = startManaged(
    'redis',
    options.programs.redisServer,
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--daemonize',
      'no',
      '--logfile',
      '',
      '--protected-mode',
      'yes',
    ],
    { logFile },
  );

  const deadline = Date.now() + (options.startTimeoutMs ?? 15_000);
  while (!(await redisPing('127.0.0.1', port, 500))) {
    if (!proc.isRunning() || Date.now() > deadline) {
      await proc.stop(2_000);
      const text = await readFile(logFile, 'utf8').catch(() => '');
      await rm(dir, { recursive: true, force: true });
      if (/Address already in use/i.test(text)) {
        throw new QuotaflowError('PORT_IN_USE', `redis-server could not bind 127.0.0.1:${port}: another program took it.`, {
          retriable: true,
          hint: 'run the command again (a free port is picked anew)',
        });
      }
      throw new QuotaflowError('SERVICE_START_FAILED', `redis-server did not start on port ${port}:\n${text.trim().split('\n').slice(-15).join('\n')}`, {
        hint: 'run `redis-server --version` to check the install; or set REDIS_URL to use an existing Redis',
      });
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const url = `redis://127.0.0.1:${port}`;
  log.info('local Redis ready', { version, url, pid: proc.pid });
  return {
    url,
    port,
    version,
    process: proc,
    async stop() {
      await proc.stop(5_000);
      await rm(dir, { recursive: true, force: true });
      log.info('local Redis stopped', { url });
    },
  };
}
