// coupon-issuer: the consumer group on coupon.v1.issue, and the producer of coupon.v1.issued.
// Wiring only; the batch logic is issue-batch.ts, the announcements announce.ts, and the
// consume/retry/dead-letter loop is events/batch-consumer.ts.
import { CouponIssueRequestedSchema } from '../../gen/coupon/events/v1/issue_pb.js';
import { CouponIssuedSchema } from '../../gen/coupon/events/v1/issued_pb.js';
import { redisTarget, type Config } from '../config.ts';
import type { Logger } from '../log.ts';
import { Alerter } from '../events/alert.ts';
import { startBatchConsumer } from '../events/batch-consumer.ts';
import { createKafka, createPublishingKafka } from '../events/kafka.ts';
import { codecWhenAvailable } from '../events/producer-start.ts';
import { BatchingPublisher } from '../events/publisher.ts';
import { EventRegistry } from '../events/registry.ts';
import { ensureTopics, topicNames } from '../events/topics.ts';
import { createDb, migrate } from '../store/db.ts';
import { createRedis, redisReady } from '../store/redis.ts';
import { CouponScripts } from '../store/scripts.ts';
import { ReplicaAcks } from '../store/replica-acks.ts';
import { recordDeadLetters } from '../store/dead-letters.ts';
import { issueBatch, type IssueStats } from './issue-batch.ts';
import { fenceRecorder } from '../store/fences.ts';
import { startAnnouncer } from './announce.ts';
import { redemptionGroups, startRedemptionConsumers } from '../redemption/wiring.ts';
import { startReconcileJob } from '../ops/reconcile-job.ts';
import { startIssuerMetrics } from './metrics-server.ts';

export interface IssuerApp { stats: IssueStats; close(): Promise<void> }

export async function startIssuer(config: Config, log: Logger): Promise<IssuerApp> {
  const db = createDb(config.DATABASE_URL, config.DATABASE_POOL_MAX);
  const redis = createRedis(redisTarget(config));
  const kafka = createKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-issuer`, log);
  await migrate(db);
  await redisReady(redis);
  const admin = kafka.admin();
  await admin.connect();
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
  await ensureTopics(admin, { partitions: config.KAFKA_TOPIC_PARTITIONS, replicationFactor: config.KAFKA_REPLICATION_FACTOR, minInsyncReplicas: config.KAFKA_MIN_INSYNC_REPLICAS }, Object.values(topics));
  await admin.disconnect();
  // Before joining any consumer group, so a metrics port that is taken stops the start cleanly.
  const metrics = await startIssuerMetrics({ config, log, kafka, db, redis });

  const registry = new EventRegistry({ url: config.SCHEMA_REGISTRY_URL, compatibility: config.SCHEMA_COMPATIBILITY });
  const dltProducer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  await dltProducer.connect();
  const stats: IssueStats = { batches: 0, inserts: 0, rowsInserted: 0, stale: 0 };
  const policy = { maxAttempts: config.ISSUE_MAX_ATTEMPTS, backoffMs: config.ISSUE_BACKOFF_MS, maxBackoffMs: config.ISSUE_BACKOFF_MAX_MS };
  const alerter = new Alerter(log, config.ALERT_WEBHOOK_URL);
  // coupon.v1.issued's schema is registered before any group is joined: a producer whose schema the
  // registry refuses does not start.
  const issuedCodec = await codecWhenAvailable(registry, topics.issued, CouponIssuedSchema, { log, alerter });
  const announcing = createPublishingKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-issuer-announce`, log, config.PUBLISH_TIMEOUT_MS);
  const announcePublisher = new BatchingPublisher(announcing.producer, { lingerMs: config.PUBLISH_LINGER_MS, maxBatch: config.PUBLISH_MAX_BATCH, timeoutMs: config.PUBLISH_TIMEOUT_MS, fence: announcing.fence }, log);
  await announcePublisher.connect();
  const announcer = startAnnouncer(
    { db, send: (topic, message) => announcePublisher.send(topic, message), codec: issuedCodec, alerter, log },
    { intervalMs: config.RECOVERY_INTERVAL_MS, staleMs: config.RECOVERY_STALE_MS },
  );
  const reconcileAdmin = kafka.admin();
  await reconcileAdmin.connect();
  const reconcile = startReconcileJob({ db, redis, admin: reconcileAdmin, topics, issuerGroup: config.KAFKA_ISSUER_GROUP, ledgerGroup: redemptionGroups(config.KAFKA_REDEMPTION_GROUP).ledger }, config.RECONCILE_INTERVAL_MS, log);
  const running = await startBatchConsumer({
    kafka,
    groupId: config.KAFKA_ISSUER_GROUP,
    topic: topics.issue,
    dltTopic: topics.issueDlt,
    decoder: registry.decoderFor(CouponIssueRequestedSchema),
    handle: issueBatch({ db, scripts: new CouponScripts(redis), acks: new ReplicaAcks(redis, { replicas: config.REDIS_WAIT_REPLICAS, timeoutMs: config.REDIS_WAIT_TIMEOUT_MS }), log, stats, onCoupons: (ids) => reconcile.touched(ids), announce: (rows) => announcer.announce(rows), failpoint: config.FAILPOINT }),
    policy,
    alerter,
    alertEvent: 'coupon.issue.dead_lettered',
    dltProducer,
    recordDeadLetters: (entries) => recordDeadLetters(db, entries),
    keyIsCouponId: true,
    claimOf: (e) => ({ userId: e.userId, seq: e.seq }),
    onFence: fenceRecorder({ db, log }, 'coupon_fences'),
    log,
  });
  const redemption = await startRedemptionConsumers({ config, log, kafka, db, redis, registry, dltProducer, alerter, policy });
  log.info({ group: config.KAFKA_ISSUER_GROUP, topic: topics.issue, metricsPort: metrics.port }, 'coupon-issuer consuming');

  return {
    stats,
    async close() {
      reconcile.stop();
      await running.stop();
      await redemption.stop();
      await announcer.stop();
      await metrics.close();
      await Promise.allSettled([dltProducer.disconnect(), announcePublisher.disconnect(), reconcileAdmin.disconnect(), redis.quit(), db.destroy()]);
      log.info(stats, 'issuer totals');
    },
  };
}
