// A node:test reporter that prints nothing while tests run and, at the end, one JSON line with the
// counts of leaf tests (suites are not counted). ops/test/run.ts reads it to decide whether the
// integration tests really ran.
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
      counts.failures.push(`${data.file ?? ''} › ${data.name}`);
    }
  }
  yield JSON.stringify(counts) + '\n';
}
