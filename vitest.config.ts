import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    setupFiles: ['test/process-setup.ts'],
    // Safety nets, not measurements: a test waits for its conditions with caps of its own, and on
    // a loaded two-core box a correct test that starts processes and runs load can take minutes.
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Suites start real servers and processes; two cores are shared with them.
    pool: 'forks',
    maxWorkers: 2,
  },
});
