/**
 * scripts/run-tests.mjs (what `npm test` runs) fails the run when a test is
 * skipped without a reason, and prints every reason given through
 * test/tools/skip.ts. Driven on fixture suites with their own vitest config,
 * reporting to a temporary file (SIFUSE_TEST_REPORT) so an enclosing run's
 * report is left alone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { join } from 'node:path';
import { makeTempDir, removeTempDir, repoRoot } from './helpers.js';

let dir = '';
beforeAll(() => {
  dir = makeTempDir('run-tests');
});
afterAll(() => removeTempDir(dir));

async function runner(fixture: string) {
  return execa(
    'node',
    [
      join(repoRoot, 'scripts', 'run-tests.mjs'),
      '--config',
      'test/tools/fixtures/skips/vitest.config.ts',
      `test/tools/fixtures/skips/${fixture}`,
    ],
    { cwd: repoRoot, reject: false, all: true, env: { SIFUSE_TEST_REPORT: join(dir, `${fixture}.json`) } },
  );
}

describe('scripts/run-tests.mjs', () => {
  it('fails a run with a test skipped without a reason, naming it', async () => {
    const r = await runner('unreasoned.fixture.ts');
    expect(r.exitCode, r.all).toBe(1);
    expect(r.stderr).toMatch(/Skipped WITHOUT a reason \(1\)/);
    expect(r.stderr).toMatch(/unreasoned\.fixture\.ts > skipped without a reason/);
    expect(r.stdout).toMatch(/^1 passed, 1 failed, 1 skipped$/m);
  });

  it('passes a run whose skips all give reasons, printing each', async () => {
    const r = await runner('reasoned.fixture.ts');
    expect(r.exitCode, r.all).toBe(0);
    for (const reason of ['fixture reason one', 'fixture reason two', 'fixture reason three']) expect(r.stdout).toContain(reason);
    expect(r.stdout).toMatch(/Skipped with a reason \(3\)/);
    expect(r.all).toContain('SKIP skipped at run time: fixture reason three');
    expect(r.stdout).toMatch(/^1 passed, 0 failed, 3 skipped$/m);
  });
});
