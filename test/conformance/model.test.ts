/**
 * The harness checked on itself: the model as a conformance target must agree
 * with a second model on every outcome, manifest and link, and the sequences
 * must really exercise errors, renameat2 flags and lifetime races, not only
 * successes.
 */
import { describe, expect, it } from 'vitest';
import { ModelFs } from './model.js';
import { FULL_CAPABILITIES, conformanceSuite, newStats, runSequences, type ConformanceTarget } from './index.js';

const model: ConformanceTarget = {
  name: 'model',
  capabilities: FULL_CAPABILITIES,
  async open() {
    const fs = new ModelFs({ blockSize: FULL_CAPABILITIES.blockSize });
    return { fs, close: async () => undefined };
  },
};

conformanceSuite(model, { sequences: 200, ops: 60, timeoutMs: 10_000 });

describe('the generated sequences', () => {
  it('reach every kind of operation and the common errors', async () => {
    const stats = newStats();
    await runSequences(model, { sequences: 40, ops: 60, seedBase: 1 }, stats);
    for (const code of ['ok', 'ENOENT', 'EEXIST', 'ENOTDIR', 'EISDIR', 'ENOTEMPTY', 'EINVAL', 'EPERM', 'ENODATA']) {
      expect(stats.outcomes.get(code) ?? 0, code).toBeGreaterThan(0);
    }
  });
});
