// coupon-issuer: the consumer group on coupon.v1.issue. Wiring only; the batch logic is
// issue-batch.ts and the consume/retry/dead-letter loop is events/batch-consumer.ts.
import http from 'node:http';
import { register } from 'prom-client';
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { Alerter } from '../events/alert.ts';
import { startBatchConsumer } from '../events/batch-consumer.ts';
import { createKafka } from '../events/kafka.ts';
import { EventRegistry } from '../events/registry.ts';
import { ensureTopics, topicNames } from '../events/topics.ts';
import { createDb, migrate } from '../store/db.ts';
import { createRedis } from '../store/redis.ts';
import { CouponScripts } from '../store/scripts.ts';
import { issueBatch, type IssueStats } from './issue-batch.ts';
import { startRedemptionConsumers } from '../redemption/app.ts';

export interface IssuerApp { stats: IssueStats; close(): Promise<void> }

export async function startIssuer(config: Config, log: Logger): Promise<IssuerApp> {
  const db = createDb(config.DATABASE_URL, config.DATABASE_POOL_MAX);
  const redis = createRedis(config.REDIS_URL);
  const kafka = createKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-issuer`, log);
  await migrate(db);
  const admin = kafka.admin();
  await admin.connect();
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
  await ensureTopics(admin, { partitions: config.KAFKA_TOPIC_PARTITIONS, replicationFactor: config.KAFKA_REPLICATION_FACTOR }, Object.values(topics));
  await admin.disconnect();

  const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
  const dltProducer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await dltProducer.connect();
  const stats: IssueStats = { batches: 0, inserts: 0, rowsInserted: 0, stale: 0 };
  const policy = { maxAttempts: config.ISSUE_MAX_ATTEMPTS, backoffMs: config.ISSUE_BACKOFF_MS, maxBackoffMs: config.ISSUE_BACKOFF_MAX_MS };
  const alerter = new Alerter(log, config.ALERT_WEBHOOK_URL);
  const running = await startBatchConsumer({
    kafka,
    groupId: config.KAFKA_ISSUER_GROUP,
    topic: topics.issue,
    dltTopic: topics.issueDlt,
    decoder: registry.decoderFor(CouponIssueRequestedSchema),
    handle: issueBatch({ db, scripts: new CouponScripts(redis), log, stats }),
    policy,
    alerter,
    alertEvent: 'coupon.issue.dead_lettered',
    dltProducer,
    log,
  });
  const redemption = await startRedemptionConsumers({ config, log, kafka, db, redis, registry, dltProducer, alerter, policy });
  const metrics = config.METRICS_PORT === undefined ? undefined : await serveMetrics(config.API_HOST, config.METRICS_PORT);
  log.info({ group: config.KAFKA_ISSUER_GROUP, topic: topics.issue, metricsPort: metrics?.port }, 'coupon-issuer consuming');

  return {
    stats,
    async close() {
      await running.stop();
      await redemption.stop();
      metrics?.server.close();
      await Promise.allSettled([dltProducer.disconnect(), redis.quit(), db.destroy()]);
      log.info(stats, 'issuer totals');
    },
  };
}

/** Prometheus text format on /metrics (loopback by default, like the API). */
async function serveMetrics(host: string, port: number): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    if (req.url !== '/metrics') { res.writeHead(404).end(); return; }
    register.metrics().then((text) => res.writeHead(200, { 'content-type': register.contentType }).end(text), () => res.writeHead(500).end());
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : port };
}
