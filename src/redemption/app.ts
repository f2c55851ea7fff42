// Redemption wiring for both processes. coupon-api serves RedeemCoupon and CancelRedemption and
// republishes stale journal entries; coupon-issuer runs the two consumers: the ledger (redemption
// events → PostgreSQL) and the payment results (PAYMENT_STATUS_FAILED → cancel).
import type { Admin, Kafka, Producer } from 'kafkajs';
import { CouponRedemptionChangedSchema } from '../../gen/coupon/events/v1/redemption_pb.js';
import { PaymentResultSchema } from '../../gen/payment/v1/payment_pb.js';
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import type { Alerter } from '../events/alert.ts';
import { startBatchConsumer } from '../events/batch-consumer.ts';
import { BatchingPublisher } from '../events/publisher.ts';
import type { EventRegistry } from '../events/registry.ts';
import type { RetryPolicy } from '../events/retry-policy.ts';
import { consumerCaughtUp } from '../events/consumer-lag.ts';
import { topicNames } from '../events/topics.ts';
import type { Db } from '../store/db.ts';
import type { Redis } from '../store/redis.ts';
import { CouponScripts } from '../store/scripts.ts';
import { couponIndexKey } from '../store/keys.ts';
import { redemptionLedgerBatch, type LedgerStats } from './ledger.ts';
import { paymentResultBatch, type PaymentResultStats } from './payment-batch.ts';
import { Redemption } from './redemption.ts';

// How long a load from the ledger waits for the ledger consumer to apply what is on the topic
// (a healthy consumer is one batch behind) before answering UNAVAILABLE.
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
}

/** The Redemption service; registers the redemption event schema first (a producer's duty). */
export async function createRedemption(w: RedemptionWiring): Promise<Redemption> {
  const topics = topicNames(w.config.KAFKA_TOPIC_PREFIX);
  return new Redemption({
    db: w.db,
    redis: w.redis,
    scripts: new CouponScripts(w.redis),
    publisher: w.publisher,
    encoder: await w.registry.forTopic(topics.redemption, CouponRedemptionChangedSchema),
    topic: topics.redemption,
    indexKey: couponIndexKey(w.config.KAFKA_TOPIC_PREFIX),
    log: w.log,
    ledgerCaughtUp: consumerCaughtUp(w.admin, redemptionGroups(w.config.KAFKA_REDEMPTION_GROUP).ledger, topics.redemption, LEDGER_CATCH_UP_WAIT_MS),
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
  // Cancels for failed payments publish their changes like CancelRedemption does.
  const producer = o.kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1_000 } });
  await producer.connect();
  const publisher = new BatchingPublisher(producer, { lingerMs: config.PUBLISH_LINGER_MS, maxBatch: config.PUBLISH_MAX_BATCH, timeoutMs: config.PUBLISH_TIMEOUT_MS }, log);
  const redemption = await createRedemption({ config, log, db: o.db, redis: o.redis, registry: o.registry, publisher, admin });
  const stats = { ledger: { batches: 0, applied: 0, cancellations: 0 }, paymentResults: { failedPayments: 0, cancelled: 0, unchanged: 0, mismatched: 0 } };
  const common = { kafka: o.kafka, policy: o.policy, alerter: o.alerter, dltProducer: o.dltProducer, log };

  const [ledger, payments] = await Promise.all([startBatchConsumer({
    ...common,
    groupId: groups.ledger,
    topic: topics.redemption,
    dltTopic: topics.redemptionDlt,
    decoder: o.registry.decoderFor(CouponRedemptionChangedSchema),
    handle: redemptionLedgerBatch({ db: o.db, log, stats: stats.ledger }),
    alertEvent: 'coupon.redemption.dead_lettered',
  }), startBatchConsumer({
    ...common,
    groupId: groups.paymentResult,
    topic: topics.paymentResult,
    dltTopic: topics.paymentResultDlt,
    decoder: o.registry.decoderFor(PaymentResultSchema),
    handle: paymentResultBatch({ redemption, log, stats: stats.paymentResults }),
    alertEvent: 'coupon.payment_result.dead_lettered',
  })]);
  log.info({ groups, topics: [topics.redemption, topics.paymentResult] }, 'redemption consumers running');

  return {
    stats,
    async stop() {
      await Promise.allSettled([payments.stop(), ledger.stop()]);
      await publisher.flush().catch(() => undefined);
      await Promise.allSettled([producer.disconnect(), admin.disconnect()]);
      log.info(stats, 'redemption totals');
    },
  };
}
