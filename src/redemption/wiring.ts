// Redemption wiring for both processes. coupon-api serves RedeemCoupon and CancelRedemption and
// republishes stale journal entries; coupon-issuer runs the two consumers: the ledger (redemption
// events → PostgreSQL) and the payment results (PAYMENT_STATUS_FAILED → cancel).
import type { Admin, Kafka, Producer } from 'kafkajs';
import { CouponRedemptionChangedSchema } from '../../gen/coupon/events/v1/redemption_pb.js';
import { PaymentResultSchema } from '../../gen/payment/v1/payment_pb.js';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import type { Alerter } from '../events/alert.ts';
import { codecWhenAvailable } from '../events/producer-start.ts';
import { fenceWriter } from '../events/fence.ts';
import { startBatchConsumer } from '../events/batch-consumer.ts';
import { BatchingPublisher } from '../events/publisher.ts';
import type { EventRegistry } from '../events/registry.ts';
import type { RetryPolicy } from '../events/retry-policy.ts';
import { consumerCaughtUp } from '../events/consumer-lag.ts';
import { createPublishingKafka } from '../events/kafka.ts';
import { topicNames } from '../events/topics.ts';
import { LossGuard, lossSettleMs } from '../store/loss-guard.ts';
import type { Db } from '../store/db.ts';
import type { Redis } from '../store/redis.ts';
import { ReplicaAcks } from '../store/replica-acks.ts';
import { ActiveCoupons } from '../store/active-coupons.ts';
import { CouponScripts } from '../store/scripts.ts';
import { recordDeadLetters, type DeadLetterEntry } from '../store/dead-letters.ts';
import { activeCouponsKey } from '../store/keys.ts';
import { redemptionLedgerBatch, type LedgerStats } from './ledger.ts';
import { fenceRecorder } from '../store/fences.ts';
import { paymentResultBatch, type PaymentResultStats } from './payment-batch.ts';
import { Redemption } from './redemption.ts';

// How long a load from the ledger waits for the ledger consumer to apply what is on the topic
// (a healthy consumer is one batch behind) before answering UNAVAILABLE. The load also waits until
// nothing redeemed or cancelled before Redis lost the coupon can still land (store/loss-guard.ts).
const LEDGER_CATCH_UP_WAIT_MS = 2_000;

/** Consumer groups: the ledger uses KAFKA_REDEMPTION_GROUP, the payment results a group derived from it. */
export const redemptionGroups = (base: string) => ({ ledger: base, paymentResult: `${base}.payment-result` });

export interface RedemptionWiring {
  config: Config;
  log: Logger;
  db: Db;
  redis: Redis;
  registry: EventRegistry;
  publisher: BatchingPublisher;
  /** A connected admin client, for the ledger's caught-up check before a restore. */
  admin: Admin;
  /** Raises the alert when dead letters block a coupon's load. */
  alerter: Alerter;
}

/** The Redemption service; registers the redemption event schema first (a producer's duty). */
export async function createRedemption(w: RedemptionWiring): Promise<Redemption> {
  const topics = topicNames(w.config.KAFKA_TOPIC_PREFIX);
  const active = new ActiveCoupons(w.redis, activeCouponsKey(w.config.KAFKA_TOPIC_PREFIX));
  const scripts = new CouponScripts(w.redis, { active, retentionMs: w.config.REDIS_RETENTION });
  return new Redemption({
    db: w.db,
    redis: w.redis,
    scripts,
    publisher: w.publisher,
    encoder: await codecWhenAvailable(w.registry, topics.redemption, CouponRedemptionChangedSchema, { log: w.log, alerter: w.alerter }),
    topic: topics.redemption,
    active,
    log: w.log,
    acks: new ReplicaAcks(w.redis, { replicas: w.config.REDIS_WAIT_REPLICAS, timeoutMs: w.config.REDIS_WAIT_TIMEOUT_MS }),
    guard: new LossGuard({
      redis: w.redis,
      scripts,
      db: w.db,
      alerter: w.alerter,
      log: w.log,
      state: 'redemption',
      settleMs: lossSettleMs(w.config.PUBLISH_TIMEOUT_MS),
      consumerCaughtUp: consumerCaughtUp(w.admin, redemptionGroups(w.config.KAFKA_REDEMPTION_GROUP).ledger, topics.redemption, LEDGER_CATCH_UP_WAIT_MS),
      fence: fenceWriter(w.publisher, topics.redemption),
      topic: topics.redemption,
      dltTopic: topics.redemptionDlt,
      blockedAlert: 'coupon.redemption.load_blocked',
    }),
  });
}

export interface RedemptionConsumers {
  stats: { ledger: LedgerStats; paymentResults: PaymentResultStats };
  stop(): Promise<void>;
}

/** coupon-issuer's half: the ledger consumer and the payment-result consumer, same RetryPolicy, DLT and alerts as issuing. */
export async function startRedemptionConsumers(o: { config: Config; log: Logger; kafka: Kafka; db: Db; redis: Redis; registry: EventRegistry; dltProducer: Producer; alerter: Alerter; policy: RetryPolicy }): Promise<RedemptionConsumers> {
  const { config, log } = o;
  const topics = topicNames(config.KAFKA_TOPIC_PREFIX);
  const groups = redemptionGroups(config.KAFKA_REDEMPTION_GROUP);
  const admin = o.kafka.admin();
  await admin.connect();
  // Cancels for failed payments publish their changes like CancelRedemption does, under the same
  // bound (a rebuild after a Redis loss counts on it).
  const publishing = createPublishingKafka(config.KAFKA_BROKERS, `${config.KAFKA_CLIENT_ID}-issuer-publish`, log, config.PUBLISH_TIMEOUT_MS);
  const publisher = new BatchingPublisher(publishing.producer, { lingerMs: config.PUBLISH_LINGER_MS, maxBatch: config.PUBLISH_MAX_BATCH, timeoutMs: config.PUBLISH_TIMEOUT_MS, fence: publishing.fence }, log);
  await publisher.connect();
  const redemption = await createRedemption({ config, log, db: o.db, redis: o.redis, registry: o.registry, publisher, admin, alerter: o.alerter });
  const stats = { ledger: { batches: 0, applied: 0, cancellations: 0, stale: 0 }, paymentResults: { failedPayments: 0, cancelled: 0, unchanged: 0, mismatched: 0 } };
  const common = { kafka: o.kafka, policy: o.policy, alerter: o.alerter, dltProducer: o.dltProducer, log, recordDeadLetters: (entries: DeadLetterEntry[]) => recordDeadLetters(o.db, entries) };

  const [ledger, payments] = await Promise.all([startBatchConsumer({
    ...common,
    groupId: groups.ledger,
    topic: topics.redemption,
    dltTopic: topics.redemptionDlt,
    decoder: o.registry.decoderFor(CouponRedemptionChangedSchema),
    handle: redemptionLedgerBatch({ db: o.db, log, stats: stats.ledger }),
    onFence: fenceRecorder({ db: o.db, log }, 'redemption_fences'),
    alertEvent: 'coupon.redemption.dead_lettered',
    keyIsCouponId: true,
  }), startBatchConsumer({
    ...common,
    groupId: groups.paymentResult,
    topic: topics.paymentResult,
    dltTopic: topics.paymentResultDlt,
    decoder: o.registry.decoderFor(PaymentResultSchema),
    handle: paymentResultBatch({ redemption, log, stats: stats.paymentResults }),
    alertEvent: 'coupon.payment_result.dead_lettered',
    keyIsCouponId: false,
  })]);
  log.info({ groups, topics: [topics.redemption, topics.paymentResult] }, 'redemption consumers running');

  return {
    stats,
    async stop() {
      await Promise.allSettled([payments.stop(), ledger.stop()]);
      await publisher.flush().catch(() => undefined);
      await Promise.allSettled([publisher.disconnect(), admin.disconnect()]);
      log.info(stats, 'redemption totals');
    },
  };
}
