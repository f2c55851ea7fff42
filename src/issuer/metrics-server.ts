// coupon-issuer's /metrics (ISSUER_METRICS_PORT on API_HOST): what its consumers count as they go
// (issue-batch.ts, events/alert.ts, events/publisher.ts), plus what is read at scrape time or
// probed in the background: the lag of each consumer group it runs and of each dead-letter topic's
// replay group, and whether PostgreSQL, Redis, Kafka and the registry answer.
import type { Kafka } from 'kafkajs';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { exportConsumerLag } from '../metrics/consumer-lag.ts';
import { exposeProcessMetrics } from '../metrics/serve.ts';
import { replayGroupId } from '../events/replay.ts';
import { topicNames } from '../events/topics.ts';
import { redemptionGroups } from '../redemption/wiring.ts';
import { dependencyProbes, DependencyMonitor } from '../ops/dependencies.ts';
import type { Db } from '../store/db.ts';
import type { Redis } from '../store/redis.ts';

export interface IssuerMetrics { readonly port: number | undefined; close(): Promise<void> }

export async function startIssuerMetrics(o: { config: Config; log: Logger; kafka: Kafka; db: Db; redis: Redis }): Promise<IssuerMetrics> {
  const { config, log } = o;
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
  const groups = redemptionGroups(config.KAFKA_REDEMPTION_GROUP);
  // No retries: a scrape or probe that fails is simply tried again at the next one.
  const admin = o.kafka.admin({ retry: { retries: 0 } });
  await admin.connect();
  const lag = exportConsumerLag(admin, [
    { groupId: config.KAFKA_ISSUER_GROUP, topic: topics.issue },
    { groupId: groups.ledger, topic: topics.redemption },
    { groupId: groups.paymentResult, topic: topics.paymentResult },
    ...[topics.issueDlt, topics.redemptionDlt, topics.paymentResultDlt].map((dlt) => ({ groupId: replayGroupId(config.KAFKA_CLIENT_ID, dlt), topic: dlt })),
  ], log);
  // The same probes as coupon-api's health check; here they only feed coupon_dependency_up.
  const probes = new DependencyMonitor({ probes: dependencyProbes(config, { db: o.db, redis: o.redis, kafkaAdmin: admin }), log, intervalMs: 5_000 });
  await probes.start();
  const server = await exposeProcessMetrics(config.API_HOST, config.ISSUER_METRICS_PORT);
  return {
    port: server?.port,
    async close() {
      probes.stop();
      lag.stop();
      await server?.close();
      await admin.disconnect();
    },
  };
}
