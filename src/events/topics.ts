// Every topic the project produces or consumes, named once. Topics are created explicitly by
// ensureTopics (the broker's auto-create is off), with partitions and replication from config.
import { Partitioners, type Admin } from 'kafkajs';

const BASE = {
  /** Gate → issuer: CouponIssueRequested, keyed by coupon id. */
  issue: 'coupon.v1.issue',
  /** Issue records that failed ISSUE_MAX_ATTEMPTS times or could not be decoded. */
  issueDlt: 'coupon.v1.issue.dlt',
  /** RedeemCoupon/CancelRedemption → ledger: CouponRedemptionChanged, keyed by coupon id. */
  redemption: 'coupon.v1.redemption',
  /** Redemption records that could not be applied. */
  redemptionDlt: 'coupon.v1.redemption.dlt',
  /** coupon-issuer → downstream services: CouponIssued, keyed by user id (docs/events.md#issued-coupons). */
  issued: 'coupon.v1.issued',
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

/**
 * The partition a record keyed `key` goes to on a topic of `partitionCount` partitions: the
 * producers' own partitioner (kafkajs 2's default, Java-compatible murmur2; events/kafka.ts), asked
 * the same question, so the answer is where a send put it. Only while the topic keeps its
 * partition count: adding partitions moves keys.
 */
export function partitionOfKey(topic: string, key: string, partitionCount: number): number {
  const partitionMetadata = Array.from({ length: partitionCount }, (_, partitionId) => ({ partitionErrorCode: 0, partitionId, leader: 0, replicas: [0], isr: [0], offlineReplicas: [] }));
  return Partitioners.DefaultPartitioner()({ topic, partitionMetadata, message: { key, value: null } });
}

export interface TopicSettings {
  partitions: number;
  replicationFactor: number;
  /** KAFKA_MIN_INSYNC_REPLICAS; by default min(2, replicationFactor). */
  minInsyncReplicas?: number | undefined;
}

/** Creates any missing project topic. Safe to call from every process on every start. */
export async function ensureTopics(admin: Admin, settings: TopicSettings, names: readonly string[] = Object.values(Topics), leaderWaitMs = 30_000): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const missing = names.filter((name) => !existing.has(name));
  if (missing.length === 0) return;
  const minInsync = settings.minInsyncReplicas ?? Math.min(2, settings.replicationFactor);
  await admin.createTopics({
    // kafkajs's own wait asks the broker that took the request, and on a cluster that broker may
    // not know the new topic yet (UNKNOWN_TOPIC_OR_PARTITION, which kafkajs does not retry).
    waitForLeaders: false,
    topics: missing.map((topic) => ({
      topic,
      numPartitions: settings.partitions,
      replicationFactor: settings.replicationFactor,
      configEntries: [{ name: 'min.insync.replicas', value: String(minInsync) }],
    })),
  });
  await waitForLeaders(admin, missing, leaderWaitMs);
}

/**
 * Until every partition of `topics` has a leader. Brokers learn of new topics one by one, and each
 * metadata request goes to any connected broker, so three answers in a row must agree.
 */
async function waitForLeaders(admin: Admin, topics: string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let why = '';
  let agreeing = 0;
  for (;;) {
    try {
      const { topics: found } = await admin.fetchTopicMetadata({ topics });
      const leaderless = found.flatMap((t) => t.partitions.filter((p) => p.leader < 0).map((p) => `${t.name}-${p.partitionId}`));
      if (found.length === topics.length && leaderless.length === 0) {
        if (++agreeing === 3) return;
      } else {
        agreeing = 0;
        why = leaderless.length ? `no leader yet for ${leaderless.join(', ')}` : 'not every topic is known yet';
      }
    } catch (err) {
      agreeing = 0;
      why = (err as Error).message;
    }
    if (Date.now() >= deadline) throw new Error(`topics created, but their leaders did not appear within ${timeoutMs} ms: ${why}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
