import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Integration and end-to-end tests start real servers; two cores, so keep file parallelism modest.
    maxWorkers: 2,
  },
})
