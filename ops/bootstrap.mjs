#!/usr/bin/env node
// Runs before `npm start` and `npm test` (npm's prestart/pretest) so that a fresh clone needs
// nothing installed by hand: it installs the npm dependencies when they are missing or older than
// package-lock.json and, for the local stack, the system packages (Java 17, Maven, redis-server)
// with apt-get where that is possible, or else prints the one line that installs them.
// Plain JavaScript with no dependencies: it runs before node_modules exists.
//
//   node ops/bootstrap.mjs [--for start|test|ci] [--check]   (--check: report, install nothing)
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const checkOnly = args.includes('--check');
const say = (msg) => process.stderr.write(`bootstrap: ${msg}\n`);

function fail(msg, fix) {
  process.stderr.write(`bootstrap: ${msg}\n  → ${fix}\n`);
  process.exit(3);
}

const major = Number(process.versions.node.split('.')[0]);
if (major < 20)
  fail(
    `Node ${process.versions.node} is too old; quotaflow needs Node 20 or newer.`,
    'install Node 20+ (e.g. from nodejs.org or your package manager), then run the command again',
  );

// 1. npm dependencies
const lock = join(root, 'package-lock.json');
const installed = join(root, 'node_modules', '.package-lock.json');
/**
 * Installed = every package the lock file names is in npm's record of node_modules at the locked
 * version. (Comparing the two files' times is not enough: npm may write the lock file a moment after
 * its record, and an install that was not needed wipes node_modules first.)
 */
function upToDate() {
  if (!existsSync(installed)) return false;
  try {
    const want = JSON.parse(readFileSync(lock, 'utf8')).packages ?? {};
    const have = JSON.parse(readFileSync(installed, 'utf8')).packages ?? {};
    return Object.entries(want).every(([path, p]) => path === '' || p.optional || have[path]?.version === p.version);
  } catch {
    return false;
  }
}
if (!upToDate()) {
  if (checkOnly) fail('npm dependencies are not installed.', 'npm ci');
  say('installing npm dependencies (npm ci)…');
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) fail('npm ci failed (see above).', 'check that the npm registry is reachable, then run `npm ci`');
}

// 2. system programs for the local stack (not needed when KAFKA_BROKERS / REDIS_URL name existing services)
const has = (cmd, versionArg = '--version') => spawnSync(cmd, [versionArg], { stdio: 'ignore' }).status === 0;
const javaOk = () => {
  const r = spawnSync('java', ['-version'], { encoding: 'utf8' });
  const m = /version "(\d+)/.exec(`${r.stderr ?? ''}${r.stdout ?? ''}`);
  return r.status === 0 && m !== null && Number(m[1]) >= 17;
};
const dockerAnswers = () => existsSync('/var/run/docker.sock') || Boolean(process.env.DOCKER_HOST);
const wants = [];
if (!process.env.KAFKA_BROKERS && !dockerAnswers()) {
  if (!javaOk()) wants.push({ pkg: 'openjdk-17-jre-headless', what: 'Java 17 (runs the local Kafka broker)' });
  if (!has('mvn')) wants.push({ pkg: 'maven', what: 'Maven (fetches the Kafka broker jars once)' });
}
if (!process.env.REDIS_URL && !dockerAnswers() && !has('redis-server')) wants.push({ pkg: 'redis-server', what: 'redis-server' });
// The tests run every example of the README and the --help texts, which use curl and jq.
const forTests = args.includes('test') || args.includes('ci');
if (forTests && !has('curl')) wants.push({ pkg: 'curl', what: 'curl (the examples use it)' });
if (forTests && !has('jq')) wants.push({ pkg: 'jq', what: 'jq (the examples pipe JSON through it)' });

if (wants.length) {
  const line = `apt-get install -y ${wants.map((w) => w.pkg).join(' ')}`;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (checkOnly || !has('apt-get', '--version')) {
    fail(`missing: ${wants.map((w) => w.what).join(', ')}.`, `install them (${line}), or point KAFKA_BROKERS / REDIS_URL at existing services`);
  }
  const [apt, ...pre] = isRoot ? ['apt-get'] : ['sudo', '-n', 'apt-get'];
  say(`installing ${wants.map((w) => w.pkg).join(', ')} with apt-get…`);
  try {
    execFileSync(apt, [...pre, 'update', '-qq'], { stdio: 'inherit' });
    execFileSync(apt, [...pre, 'install', '-y', '-qq', ...wants.map((w) => w.pkg)], {
      stdio: 'inherit',
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  } catch {
    fail(`could not install ${wants.map((w) => w.pkg).join(', ')}.`, `run \`sudo ${line}\`, or point KAFKA_BROKERS / REDIS_URL at existing services`);
  }
}
