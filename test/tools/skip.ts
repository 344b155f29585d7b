/**
 * Skips with a reason, the only way a test may skip (STYLE.md: "a test must
 * be able to fail"). A test that cannot run here (not root, a tool missing,
 * no network) skips at run time through `skipBecause`, which prints
 * "SKIP <test>: <reason>" and records the reason in the test's meta; the
 * runner (scripts/run-tests.mjs) reads vitest's JSON report, prints every
 * reason, and fails the run for any skipped test without one (it.skip,
 * describe.skip, it.todo, runIf/skipIf, a bare ctx.skip()).
 *
 *   itIf(isRoot, 'loop mounts need root')('mounts the image', async () => { ... });
 *   describeIf(isRoot, 'loop mounts need root')('kernel views', () => { ... });
 *   it('...', async (ctx) => { if (!haveNet) skipBecause(ctx, 'no network'); ... });
 */
import { describe, it, type TestContext } from 'vitest';

declare module '@vitest/runner' {
  interface TaskMeta {
    /** Why the test skipped itself (set only by skipBecause). */
    skipReason?: string;
  }
}

/** Marks the running test skipped because of `reason` (never returns). */
export function skipBecause(ctx: TestContext, reason: string): never {
  if (reason.trim().length === 0) throw new Error(`${ctx.task.name}: a skip needs a reason`);
  ctx.task.meta.skipReason = reason;
  console.warn(`SKIP ${ctx.task.name}: ${reason}`);
  return ctx.skip(reason);
}

type Body = (ctx: TestContext) => unknown;

/** `it`, run only when `condition` holds; otherwise the test skips itself with `reason`. */
export function itIf(condition: boolean, reason: string) {
  return (name: string, fn: Body, timeout?: number): void => {
    it(name, (ctx) => (condition ? fn(ctx) : skipBecause(ctx, reason)), timeout);
  };
}

/**
 * `describe`, registered only when `condition` holds (its hooks would need
 * what is missing); otherwise one test of the same name stands in for the
 * block and skips with `reason`.
 */
export function describeIf(condition: boolean, reason: string) {
  return (name: string, body: () => void): void => {
    if (condition) describe(name, body);
    else it(`${name} (every test of the block)`, (ctx) => skipBecause(ctx, reason));
  };
}
