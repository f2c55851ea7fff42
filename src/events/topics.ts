// Every topic the project produces or consumes, named once. Topics are created explicitly by
// ensureTopics (the broker's auto-create is off), with partitions and replication from config.
import type { Admin } from 'kafkajs';

const BASE = {
  /** Gate → issuer: CouponIssueRequested, keyed by coupon id. */
  issue: 'coupon.v1.issue',
  /** Issue records that failed ISSUE_MAX_ATTEMPTS times or could not be decoded. */
  issueDlt: 'coupon.v1.issue.dlt',
  /** RedeemCoupon/CancelRedemption → ledger: CouponRedemptionChanged, keyed by coupon id. */
  redemption: 'coupon.v1.redemption',
  /** Redemption records that could not be applied. */
  redemptionDlt: 'coupon.v1.redemption.dlt',
  /** Payment service → coupon service: PaymentResult, keyed by order id. */
  paymentResult: 'payment.v1.result',
  /** Payment results that could not be applied. */
  paymentResultDlt: 'payment.v1.result.dlt',
} as const;

export type TopicRole = keyof typeof BASE;
export type TopicNames = { readonly [R in TopicRole]: string };

/** The default names, for docs and for callers that do not use a prefix. */
export const Topics: TopicNames = BASE;

/**
 * The topic names under KAFKA_TOPIC_PREFIX (empty by default), so several environments or test
 * runs can share one cluster without seeing each other's records.
 */
export function topicNames(prefix: string): TopicNames {
  return Object.fromEntries(Object.entries(BASE).map(([role, name]) => [role, `${prefix}${name}`])) as unknown as TopicNames;
}

export interface TopicSettings { partitions: number; replicationFactor: number }

/** Creates any missing project topic. Safe to call from every process on every start. */
export async function ensureTopics(admin: Admin, settings: TopicSettings, names: readonly string[] = Object.values(Topics)): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const missing = names.filter((name) => !existing.has(name));
  if (missing.length === 0) return;
  await admin.createTopics({
    waitForLeaders: true,
    topics: missing.map((topic) => ({
      topic,
      numPartitions: settings.partitions,
      replicationFactor: settings.replicationFactor,
      configEntries: [{ name: 'min.insync.replicas', value: String(Math.min(2, settings.replicationFactor)) }],
    })),
  });
}
