// `npm run test:cluster` (scripts/test-cluster.ts): the proofs of issue #13 §3 on the clustered
// local stack (`npm run stack:up -- --cluster`). `npm test` runs them after the main suite
// (scripts/test.ts starts that stack for them); they kill parts of it and take about a minute.
// The services and the test's own clients get the cluster's addresses, as under
// `npm start -- --cluster`; each test file still picks its own topic prefix.
import { defineConfig } from 'vitest/config';
import { clusterKafkaBrokers, clusterRedisNodes, redisPorts } from './scripts/cluster-stack.ts';
import { cfg } from './scripts/stack.ts';

const clusterDb = process.env.STACK_CLUSTER_DB ?? 'coupon_cluster';

export default defineConfig({
  test: {
    include: ['test-cluster/**/*.test.ts'],
    globalSetup: ['test-cluster/global-setup.ts'],
    pool: 'forks',
    // One file at a time: each one kills brokers and Redis masters of the one shared cluster.
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 240_000,
    hookTimeout: 180_000,
    reporters: ['default'],
    env: {
      KAFKA_BROKERS: clusterKafkaBrokers,
      KAFKA_REPLICATION_FACTOR: '3',
      KAFKA_MIN_INSYNC_REPLICAS: '2',
      REDIS_CLUSTER_NODES: clusterRedisNodes,
      // A build without Redis Cluster support fails loudly (MOVED) instead of using the single stack's Redis.
      REDIS_URL: `redis://127.0.0.1:${redisPorts[0]}/0`,
      DATABASE_URL: process.env.CLUSTER_DATABASE_URL ?? `postgres://${cfg.pgUser}@${cfg.pgHost}:${cfg.pgPort}/${clusterDb}`,
    },
  },
});
