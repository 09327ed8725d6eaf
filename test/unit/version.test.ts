/** The version compiled into `quotaflow --version` is the one package.json publishes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROJECT_ROOT } from '../../src/stack/paths.ts';
import { VERSION } from '../../src/version.ts';

test('src/version.ts says the version package.json says', () => {
  const { version } = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string };
  assert.equal(VERSION, version, 'bump src/version.ts together with package.json');
});
