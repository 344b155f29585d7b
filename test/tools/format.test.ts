/**
 * The formatter is on: every source, test, script and benchmark file is as
 * `npm run format` (prettier, .prettierrc.json) leaves it.
 */
import { execa } from 'execa';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { repoRoot } from './helpers.js';

it('every TypeScript and script file is formatted (npm run format)', async () => {
  const prettier = join(repoRoot, 'node_modules', '.bin', 'prettier');
  const globs = ['src/**/*.ts', 'test/**/*.ts', 'scripts/*.mjs', 'bench/**/*.mjs', 'bin/*.cjs', 'vitest.config.ts'];
  const r = await execa(prettier, ['--list-different', ...globs], { cwd: repoRoot, reject: false });
  expect(r.stderr).toBe('');
  expect(r.stdout.split('\n').filter(Boolean), 'files prettier would change (run npm run format)').toEqual([]);
  expect(r.exitCode).toBe(0);
});
