/**
 * What the README says of the code stays true of it.
 *
 * Its TypeScript samples type-check against the package as it is: every ```ts block,
 * with `from 'quotaflow'` pointing at src/index.ts and the names a sample takes from its
 * surroundings (an Express `app`, a `req`) declared. A renamed export or option fails here, not in
 * a user's editor. The shell examples run in test/integration/examples.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ts from 'typescript';
import { PROJECT_ROOT } from '../../src/stack/paths.ts';

/** What the samples use without defining: the web framework around them. */
const SURROUNDINGS = `
declare const app: { use(middleware: (req: any, res: any, next: () => void) => void): void };
declare const req: { headers: Record<string, string | string[] | undefined> };
export {};
`;

function tsBlocks(readme: string): string[] {
  return [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
}

test("the README's TypeScript samples type-check against the package", { timeout: 120_000 }, async (t) => {
  const blocks = tsBlocks(await readFile(join(PROJECT_ROOT, 'README.md'), 'utf8'));
  assert.ok(blocks.length > 0, 'the README has TypeScript samples');
  const dir = await mkdtemp(join(tmpdir(), 'quotaflow-readme-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'package.json'), '{ "type": "module" }\n');
  const files: string[] = [];
  for (const [i, block] of blocks.entries()) {
    const file = join(dir, `sample-${i + 1}.ts`);
    await writeFile(file, SURROUNDINGS + block.replaceAll("from 'quotaflow'", `from '${join(PROJECT_ROOT, 'src/index.ts')}'`));
    files.push(file);
  }
  const config = ts.readConfigFile(join(PROJECT_ROOT, 'tsconfig.json'), ts.sys.readFile);
  const { options } = ts.parseJsonConfigFileContent(config.config, ts.sys, PROJECT_ROOT);
  const program = ts.createProgram(files, { ...options, typeRoots: [join(PROJECT_ROOT, 'node_modules/@types')] });
  const problems = ts
    .getPreEmitDiagnostics(program)
    .filter((d) => d.file === undefined || files.includes(d.file.fileName))
    .map((d) => {
      const where = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined;
      const line = where ? where.line + 1 - SURROUNDINGS.split('\n').length + 1 : 0;
      return `${d.file ? d.file.fileName.slice(dir.length + 1) : ''}:${line}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
  assert.deepEqual(problems, [], 'each problem: the sample, its line in the README block, and what tsc says');
});

test("the README's layout table names every folder of src/ and every path it names exists", async () => {
  const readme = await readFile(join(PROJECT_ROOT, 'README.md'), 'utf8');
  const table = readme.slice(readme.indexOf('| path | what is there |'), readme.indexOf('## Performance'));
  const named = [...table.matchAll(/^\| ([^|]+) \|/gm)].flatMap((m) => [...m[1]!.matchAll(/`([^`]+)`/g)].map((p) => p[1]!));
  assert.ok(named.length > 10, table);
  const missing: string[] = [];
  for (const path of named) await access(join(PROJECT_ROOT, path)).catch(() => missing.push(path));
  assert.deepEqual(missing, [], 'paths the table names that do not exist');
  const folders = (await readdir(join(PROJECT_ROOT, 'src'), { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => `src/${d.name}/`);
  assert.deepEqual(
    folders.filter((f) => !named.includes(f)),
    [],
    'folders of src/ the table does not describe',
  );
});
