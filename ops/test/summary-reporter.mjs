// A node:test reporter that prints nothing while tests run and, at the end, one JSON line with the
// counts of leaf tests (suites are not counted). ops/test/run.ts reads it to decide whether the
// integration tests really ran, and prints each failure with the start of its reason (the last
// lines of a long run are often all of it that a reader sees).
export default async function* summary(source) {
  const counts = { passed: 0, failed: 0, skipped: 0, todo: 0, failures: [] };
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const data = event.data;
    if (data.details?.type === 'suite') continue;
    if (data.skip !== undefined && data.skip !== false) counts.skipped++;
    else if (data.todo !== undefined && data.todo !== false) counts.todo++;
    else if (event.type === 'test:pass') counts.passed++;
    else {
      counts.failed++;
      counts.failures.push(`${data.file ?? ''} › ${data.name}${reason(data.details?.error)}`);
    }
  }
  yield JSON.stringify(counts) + '\n';
}

/** The first lines of a failure's error: node:test wraps the test's own error as its cause. */
function reason(error) {
  const e = error?.cause ?? error;
  const text = String(e?.message ?? e ?? '').trim();
  if (!text) return '';
  const lines = text.split('\n');
  const head = lines.slice(0, 12).join('\n    ').slice(0, 1500);
  return `\n    ${head}${lines.length > 12 ? '\n    …' : ''}`;
}
