import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { parse } from 'yaml';
import { PROJECT_ROOT } from '../../src/stack/paths.ts';
import { pinnedKafkaVersion } from '../../src/stack/kafka-local.ts';

interface Service {
  image: string;
  ports?: string[];
  environment?: Record<string, string>;
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
}

test('docker-compose.yml: Kafka at the pinned version in KRaft mode, Redis, and quotaflow wired to them on the README ports', async () => {
  const text = await readFile(join(PROJECT_ROOT, 'docker-compose.yml'), 'utf8');
  const compose = parse(text) as { services: Record<string, Service> };
  const { kafka, redis, quotaflow } = compose.services;
  assert.ok(kafka && redis && quotaflow, 'services kafka, redis and quotaflow');

  assert.equal(kafka.image, `apache/kafka:${await pinnedKafkaVersion()}`, 'the same Kafka as ops/kafka/pom.xml');
  assert.equal(kafka.environment?.KAFKA_PROCESS_ROLES, 'broker,controller');
  assert.ok(kafka.healthcheck && redis.healthcheck, 'both services have healthchecks');
  assert.deepEqual(kafka.ports, ['9092:9092']);
  assert.deepEqual(redis.ports, ['6379:6379']);

  assert.equal(quotaflow.environment?.KAFKA_BROKERS, 'kafka:19092');
  assert.match(kafka.environment?.KAFKA_ADVERTISED_LISTENERS ?? '', /kafka:19092/);
  assert.equal(quotaflow.environment?.REDIS_URL, 'redis://redis:6379');
  assert.equal(quotaflow.depends_on?.kafka?.condition, 'service_healthy');
  assert.equal(quotaflow.depends_on?.redis?.condition, 'service_healthy');

  const readme = await readFile(join(PROJECT_ROOT, 'README.md'), 'utf8');
  assert.match(readme, /KAFKA_BROKERS=localhost:9092/, 'the README gives the compose Kafka address');
  assert.match(readme, /REDIS_URL=redis:\/\/localhost:6379/, 'the README gives the compose Redis address');
});

test('docker compose accepts the file, where the compose plugin is installed', (t) => {
  if (spawnSync('docker', ['compose', 'version'], { stdio: 'ignore' }).status !== 0) {
    // Parsing above already ran; the plugin is an extra check on machines that have it.
    t.diagnostic('docker compose plugin not installed here: checked by parsing only');
    return;
  }
  const r = spawnSync('docker', ['compose', '-f', join(PROJECT_ROOT, 'docker-compose.yml'), 'config', '-q'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});
