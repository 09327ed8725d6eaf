/**
 * Writes schemas/<name>.schema.json from the zod schemas (the single source), with zod 4's own
 * z.toJSONSchema. Run `npm run schemas` after changing a schema; test/unit/schemas.test.ts fails
 * while the committed files differ from what this generates.
 */
import { writeFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { PolicySchema } from '../src/policy/schema.ts';
import { BreachRecordSchema, DecisionSchema, OverrideSchema, RollupSchema, UsageEventSchema } from '../src/events/index.ts';
import { UsageBatchSchema } from '../src/events/batch.ts';

/** File name (without .schema.json) → schema, and whether it describes what authors write (input) or what is produced. */
const SCHEMAS: Record<string, { schema: z.ZodType; io: 'input' | 'output'; title: string }> = {
  policy: { schema: PolicySchema, io: 'input', title: 'quotaflow policy' },
  'usage-event': { schema: UsageEventSchema, io: 'output', title: 'quotaflow usage event (topic quota.usage)' },
  'usage-batch': { schema: UsageBatchSchema, io: 'output', title: 'quotaflow usage batch: many usage events in one record (topic quota.usage)' },
  decision: { schema: DecisionSchema, io: 'output', title: 'quotaflow decision (topic quota.decisions)' },
  'breach-record': { schema: BreachRecordSchema, io: 'output', title: 'quotaflow breach record (topic quota.audit)' },
  override: { schema: OverrideSchema, io: 'output', title: 'quotaflow override (topic quota.overrides)' },
  rollup: { schema: RollupSchema, io: 'output', title: "quotaflow rollup: one region's total of one counter's bucket (topic quota.rollup)" },
};

export const SCHEMAS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'schemas');

/** Every generated file: name → exact text. */
export function generateSchemas(): Map<string, string> {
  const files = new Map<string, string>();
  for (const [name, { schema, io, title }] of Object.entries(SCHEMAS)) {
    const json = z.toJSONSchema(schema, { io, target: 'draft-2020-12' }) as Record<string, unknown>;
    const { $schema, ...rest } = json;
    files.set(`${name}.schema.json`, JSON.stringify({ $schema, title, ...rest }, null, 2) + '\n');
  }
  return files;
}

const invokedDirectly = process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1];
if (invokedDirectly) {
  await mkdir(SCHEMAS_DIR, { recursive: true });
  for (const [file, text] of generateSchemas()) {
    await writeFile(join(SCHEMAS_DIR, file), text);
    process.stdout.write(`wrote schemas/${file}\n`);
  }
}
