import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // FUSE and tool-driven tests spawn child processes; forks keep them isolated.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000,
    // Tests that build fixtures with mksquashfs / mkfs.ext3 are CPU bound; two cores.
    maxWorkers: 2,
  },
});
