// Redis key layout. Every key of one coupon carries the hash tag {<coupon id>}, so each script
// touches one slot and runs unchanged on Redis Cluster.
//
//   coupon:{id}:meta      hash   total, opens_ms, closes_ms (0 = never), valid_until_ms (0 = never)
//   coupon:{id}:winners   hash   user → seq, every user who passed the gate (HLEN = accepted count)
//   coupon:{id}:next      string the highest fresh seq handed out
//   coupon:{id}:free      list   seqs released after a failed publish, handed out again first
//   coupon:{id}:pending   zset   user → reserve time (ms): reserved, publish not yet acknowledged
//   coupon:{id}:tombstones set   "<user>|<seq>" pairs released after a failed publish (the issuer
//                                drops such a record if it reached the broker after all)
//   coupon:{id}:claimed   hash   user → seq the issuer has taken (a release is refused after this)
//   coupon:{id}:issued    hash   user → issued_at (ms), once the ledger row is committed
//   coupon:{id}:redeem    hash   user → "<state>|<order id>|<version>|<at ms>" redemption state
//   coupon:{id}:cancelled set    "<user>|<order id>" pairs whose redemption was cancelled
//   coupon:{id}:outbox    zset   "<user>\n<redeem value>" (all score 0, so ZRANGEBYLEX finds a user's):
//                                redemption changes whose event Kafka has not acknowledged yet
//   coupon:{id}:redeem-loaded string "1" once redeem and cancelled hold every user's state from the
//                                ledger; redemption decides nothing without it (reloaded after a loss)
//   gate:coupons[:<prefix>] set  coupon ids created under this KAFKA_TOPIC_PREFIX, which the
//                                recovery loops walk (so one environment never republishes
//                                another's reservations onto its own topics)

export const couponKeys = (couponId: string) => {
  const p = `coupon:{${couponId}}`;
  return {
    meta: `${p}:meta`,
    winners: `${p}:winners`,
    next: `${p}:next`,
    free: `${p}:free`,
    pending: `${p}:pending`,
    released: `${p}:tombstones`,
    claimed: `${p}:claimed`,
    issued: `${p}:issued`,
    redeem: `${p}:redeem`,
    cancelled: `${p}:cancelled`,
    outbox: `${p}:outbox`,
    redeemLoaded: `${p}:redeem-loaded`,
  };
};

export const couponIndexKey = (topicPrefix: string) => (topicPrefix ? `gate:coupons:${topicPrefix}` : 'gate:coupons');

/** The redemption field in `redeem` and in outbox entries: "<R|C>|<order id>|<version>|<at ms>". */
export interface RedemptionValue { state: 'R' | 'C'; orderId: string; version: number; atMs: number }

// Greedy (.*) keeps an order id containing '|' whole: version and time are digits only.
const REDEMPTION_VALUE = /^([RC])\|(.*)\|(\d+)\|(\d+)$/;

export function parseRedemptionValue(value: string | null | undefined): RedemptionValue | undefined {
  const m = value ? REDEMPTION_VALUE.exec(value) : null;
  if (!m) return undefined;
  return { state: m[1] as 'R' | 'C', orderId: m[2]!, version: Number(m[3]), atMs: Number(m[4]) };
}
