import { defineConfig } from 'vitest/config';

// `npm run test:unit`: pure tests that need no stack (no Kafka, registry, PostgreSQL or Redis), the
// first step of `npm test`.
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts'],
    pool: 'threads',
    testTimeout: 30_000,
    reporters: ['default'],
  },
});
