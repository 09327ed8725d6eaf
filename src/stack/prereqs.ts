/**
 * Checks for the programs the local stack needs, each failing with what is wrong and the one thing
 * to do about it. Program names can be overridden (QUOTAFLOW_JAVA, QUOTAFLOW_MVN,
 * QUOTAFLOW_REDIS_SERVER) by the entry points, which is also how tests simulate a missing program.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { QuotaflowError } from '../errors.ts';

const run = promisify(execFile);

export interface Programs {
  java: string;
  mvn: string;
  redisServer: string;
}

export function programsFrom(env: NodeJS.ProcessEnv): Programs {
  return {
    java: env.QUOTAFLOW_JAVA ?? 'java',
    mvn: env.QUOTAFLOW_MVN ?? 'mvn',
    redisServer: env.QUOTAFLOW_REDIS_SERVER ?? 'redis-server',
  };
}

async function versionOutput(program: string, args: string[]): Promise<string | undefined> {
  try {
    const { stdout, stderr } = await run(program, args, { timeout: 30_000 });
    return `${stdout}\n${stderr}`;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (err.code === 'ENOENT' || err.code === 'EACCES') return undefined;
    return `${err.stdout ?? ''}\n${err.stderr ?? ''}`;
  }
}

/** Java 17 or newer (Kafka 4 brokers require it). Returns the major version. */
export async function checkJava(java: string): Promise<number> {
  const out = await versionOutput(java, ['-version']);
  if (out === undefined) {
    throw new QuotaflowError('PREREQ_MISSING', `Java was not found (looked for '${java}' on PATH); the local Kafka broker needs Java 17 or newer.`, {
      hint: 'install it: `apt-get install -y openjdk-17-jre-headless`, or set KAFKA_BROKERS to use an existing Kafka',
    });
  }
  const match = /version "(\d+)(?:\.(\d+))?/.exec(out);
  const major = match ? (match[1] === '1' ? Number(match[2]) : Number(match[1])) : NaN;
  if (!(major >= 17)) {
    throw new QuotaflowError(
      'PREREQ_MISSING',
      `Java ${Number.isNaN(major) ? '(unknown version)' : major} found at '${java}', but Kafka 4 needs Java 17 or newer.`,
      {
        hint: 'install it: `apt-get install -y openjdk-17-jre-headless`, or set QUOTAFLOW_JAVA to a Java 17+ binary',
      },
    );
  }
  return major;
}

export async function checkMaven(mvn: string): Promise<void> {
  const out = await versionOutput(mvn, ['--version']);
  if (out === undefined || !/Apache Maven/.test(out)) {
    throw new QuotaflowError('PREREQ_MISSING', `Maven was not found (looked for '${mvn}'); it fetches the Kafka broker jars from Maven Central once.`, {
      hint: 'install it: `apt-get install -y maven`, or set KAFKA_BROKERS to use an existing Kafka',
    });
  }
}

export async function checkRedisServer(redisServer: string): Promise<string> {
  const out = await versionOutput(redisServer, ['--version']);
  if (out === undefined || !/Redis server v=/.test(out)) {
    throw new QuotaflowError('PREREQ_MISSING', `redis-server was not found (looked for '${redisServer}').`, {
      hint: 'install it: `apt-get install -y redis-server`, or set REDIS_URL to use an existing Redis',
    });
  }
  return /v=(\S+)/.exec(out)?.[1] ?? 'unknown';
}
