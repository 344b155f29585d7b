#!/usr/bin/env node
// Runs the whole vitest suite and ends with one line "N passed, N failed, N skipped"
// (counted from vitest's JSON report) so CI runs can be counted. Extra arguments
// go to vitest (e.g. a test file filter).
//
// A skip must say why: tests skip at run time through test/tools/skip.ts
// (skipBecause, itIf, describeIf), which records the reason in the test's meta.
// Every reason is printed here; any skipped test without one (it.skip, it.todo,
// runIf/skipIf, a bare ctx.skip()) fails the run, so a suite cannot go quiet.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// SIFUSE_TEST_REPORT moves the JSON report (test/tools/run-tests.test.ts runs this script inside a run).
const report = process.env.SIFUSE_TEST_REPORT ?? join(root, 'test-results.json');
rmSync(report, { force: true });
const vitest = join(root, 'node_modules', '.bin', 'vitest');
const args = process.argv.slice(2);
const run = spawnSync(vitest, ['run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...args], {
  cwd: root,
  stdio: 'inherit',
});
let summary;
try {
  summary = JSON.parse(readFileSync(report, 'utf8'));
} catch {
  console.log('0 passed, 1 failed');
  console.error('vitest wrote no report (crashed before finishing)');
  process.exit(run.status || 1);
}

const SKIPPED = new Set(['skipped', 'pending', 'todo']);
const withReason = new Map();
const without = [];
for (const file of summary.testResults ?? []) {
  const name = relative(root, file.name);
  for (const t of file.assertionResults ?? []) {
    if (!SKIPPED.has(t.status)) continue;
    const reason = typeof t.meta?.skipReason === 'string' ? t.meta.skipReason.trim() : '';
    const where = `${name} > ${t.fullName}`;
    if (reason) withReason.set(reason, [...(withReason.get(reason) ?? []), where]);
    else without.push(where);
  }
}
// A name filter (-t) skips every test it does not match: nothing to hold against the suite then.
const nameFilter = args.some((a) => a === '-t' || a.startsWith('--testNamePattern') || a.startsWith('-t='));
if (withReason.size > 0) {
  console.log(`\nSkipped with a reason (${[...withReason.values()].reduce((n, l) => n + l.length, 0)}):`);
  for (const [reason, tests] of withReason) {
    console.log(`  ${reason}`);
    for (const t of tests) console.log(`    ${t}`);
  }
}
let unexplained = 0;
if (without.length > 0 && !nameFilter) {
  unexplained = without.length;
  console.error(
    `\nSkipped WITHOUT a reason (${without.length}): skip through test/tools/skip.ts (skipBecause, itIf, describeIf) so the reason is printed:`,
  );
  for (const t of without) console.error(`  ${t}`);
}

const passed = summary.numPassedTests ?? 0;
const failed = (summary.numFailedTests ?? 0) + (summary.numFailedTestSuites ?? 0) + unexplained;
const skipped = (summary.numPendingTests ?? 0) + (summary.numTodoTests ?? 0);
const code = run.status ?? 1;
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(code !== 0 ? code : failed > 0 || passed === 0 ? 1 : 0);
