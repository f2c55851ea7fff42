// Once before the cluster proofs: the clustered stack is up and whole (three brokers, no
// under-replicated partition; three masters with a replica each), the ledger database exists and
// is migrated. Topics are created by the services, under each file's own prefix.
import { clusterKafkaBrokers, waitForKafkaCluster, waitForRedisCluster } from '../scripts/cluster-stack.ts';
import { ensureDatabase } from '../scripts/stack.ts';
import { withLocalAuth } from '../scripts/local-auth.ts';
import type { TestProject } from 'vitest/node';
import { createDb, migrate } from '../src/store/db.ts';

export default async function setup(project: TestProject): Promise<void> {
  Object.assign(process.env, await withLocalAuth(process.env));
  const env = project.config.env as Record<string, string>;
  if (env.KAFKA_BROKERS !== clusterKafkaBrokers) throw new Error(`KAFKA_BROKERS is ${env.KAFKA_BROKERS}, not the clustered stack (${clusterKafkaBrokers})`);
  try {
    await waitForKafkaCluster({ timeoutMs: 60_000 });
    const redis = await waitForRedisCluster({ timeoutMs: 30_000 });
    const alone = redis.masters.filter((m) => m.replicas.length === 0).map((m) => m.port);
    if (alone.length) throw new Error(`Redis masters without a replica: ${alone.join(', ')}`);
  } catch (err) {
    throw new Error(`the clustered stack is not up and whole (${(err as Error).message}): run npm run stack:up -- --cluster first`, { cause: err });
  }
  const url = new URL(env.DATABASE_URL!);
  await ensureDatabase(url.pathname.slice(1));
  const db = createDb(env.DATABASE_URL!);
  try { await migrate(db); } finally { await db.destroy(); }
}
