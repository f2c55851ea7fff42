// Runs once before the suite: the ledger schema and the project's topics exist, so test files can
// run in any order and in parallel. The stack itself is brought up by `npm test` (scripts/test.ts).
import { loadConfig } from '../../src/config.ts';
import { createDb, migrate } from '../../src/store/db.ts';
import { createKafka } from '../../src/events/kafka.ts';
import { ensureTopics } from '../../src/events/topics.ts';
import { createLogger } from '../../src/log.ts';
import { withLocalAuth } from '../../scripts/local-auth.ts';

export default async function setup(): Promise<void> {
  // coupon-api processes started by tests trust the local signing key, also under a bare `vitest`.
  Object.assign(process.env, await withLocalAuth(process.env));
  const config = loadConfig();
  const db = createDb(config.DATABASE_URL);
  try { await migrate(db); } finally { await db.destroy(); }
  const admin = createKafka(config.KAFKA_BROKERS, 'test-setup', createLogger('test', 'warn')).admin();
  await admin.connect();
  try {
    await ensureTopics(admin, { partitions: config.KAFKA_TOPIC_PARTITIONS, replicationFactor: config.KAFKA_REPLICATION_FACTOR });
  } finally { await admin.disconnect(); }
}
