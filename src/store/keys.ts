// Redis key layout. Every key of one coupon carries the hash tag {<coupon id>}, so each script
// touches one slot and runs unchanged on Redis Cluster.
//
//   coupon:{id}:meta      hash   total, opens_ms, closes_ms (0 = never), valid_until_ms (0 = never),
//                                expire_at_ms (when every key of the coupon expires; 0 = never) and
//                                retention_ms (REDIS_RETENTION when armed; see "Retention" below)
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
//   coupon:{id}:free:staging:<token>  list  the free list one gate rebuild is building; renamed
//                                to free when that rebuild arms the gate (so two rebuilds at once
//                                never list a seq twice); dropped when another armed first, and
//                                expiring 10 minutes after its last write if its rebuild died
//   coupon:{id}:rebuild:<token> string  how many rows and free seqs one gate rebuild has written;
//                                arming checks it, so Redis losing state mid-rebuild (the token
//                                with it, or the last writes) never arms a partial gate
//   coupon:{id}:redeem-load:<token> string  the same for one load of the redemption state
//   coupon:{id}:rebuild-after string when (ms, Redis time) the gate, found lost, may be rebuilt from
//                                the ledger: first noticed + settle (store/loss-guard.ts); removed
//                                once rebuilt
//   coupon:{id}:redeem-load-after string the same for the redemption state (redeem-loaded lost)
//   gate:active[:<prefix>] zset  coupon id → last time (ms) a script that can add a pending
//                                reservation or an outbox entry was about to run, under this
//                                KAFKA_TOPIC_PREFIX; the recovery loops walk only these (so one
//                                environment never republishes another's), and drop a coupon once
//                                it has neither and has been idle a while (store/active-coupons.ts)
//   gate:coupons[:<prefix>] set  the index before gate:active (every coupon ever created); the
//                                recovery loop drains what is left of it into gate:active
//
// Retention: every key of a coupon expires at the same moment, meta's expire_at_ms. Arming sets it
// on every key that exists, and each script that creates a key gives it the same deadline
// (lib/expiry.lua), so a coupon's keys never outlive one another.

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
    rebuildAfter: `${p}:rebuild-after`,
    redeemLoadAfter: `${p}:redeem-load-after`,
  };
};

/** Every key of the coupon, in the order scripts that touch all of them take them. */
export const allCouponKeys = (couponId: string): string[] => Object.values(couponKeys(couponId));

/**
 * The keys that share the coupon's retention deadline (arming, an operator's change and completion
 * set it on them): every key but the loss markers, which keep their own short expiry.
 */
export const retainedCouponKeys = (couponId: string): string[] => {
  const k = couponKeys(couponId);
  return allCouponKeys(couponId).filter((key) => key !== k.rebuildAfter && key !== k.redeemLoadAfter);
};

/** State of a coupon that Redis can lose and the ledger rebuilds (store/loss-guard.ts). */
export type RebuiltState = 'gate' | 'redemption';

/** The free list one rebuild builds under its own token, renamed to `free` when it arms. */
export const stagedFreeKey = (couponId: string, token: string) => `coupon:{${couponId}}:free:staging:${token}`;

/** The count one gate rebuild (or redemption load) keeps of what it wrote (gate-load.lua, restore-redemption.lua). */
export const loadTokenKey = (couponId: string, state: RebuiltState, token: string) => `coupon:{${couponId}}:${state === 'gate' ? 'rebuild' : 'redeem-load'}:${token}`;

/**
 * How long a load's staged free list and token (stagedFreeKey, loadTokenKey) outlive its last call:
 * a load that died leaves them to expire.
 */
export const STAGING_TTL_MS = 10 * 60_000;

/** The key whose absence means the state is lost, and the marker of when it may be rebuilt. */
export function lossKeys(couponId: string, state: RebuiltState): { present: string; marker: string } {
  const k = couponKeys(couponId);
  return state === 'gate' ? { present: k.meta, marker: k.rebuildAfter } : { present: k.redeemLoaded, marker: k.redeemLoadAfter };
}

/** The coupons the recovery loops walk: those that may hold pending reservations or outbox entries. */
export const activeCouponsKey = (topicPrefix: string) => (topicPrefix ? `gate:active:${topicPrefix}` : 'gate:active');

/** The index the code before gate:active kept: every coupon ever created (drained into activeCouponsKey). */
export const legacyCouponIndexKey = (topicPrefix: string) => (topicPrefix ? `gate:coupons:${topicPrefix}` : 'gate:coupons');

/** The redemption field in `redeem` and in outbox entries: "<R|C>|<order id>|<version>|<at ms>". */
export interface RedemptionValue { state: 'R' | 'C'; orderId: string; version: number; atMs: number }

// Greedy (.*) keeps an order id containing '|' whole: version and time are digits only.
const REDEMPTION_VALUE = /^([RC])\|(.*)\|(\d+)\|(\d+)$/;

export function parseRedemptionValue(value: string | null | undefined): RedemptionValue | undefined {
  const m = value ? REDEMPTION_VALUE.exec(value) : null;
  if (!m) return undefined;
  return { state: m[1] as 'R' | 'C', orderId: m[2]!, version: Number(m[3]), atMs: Number(m[4]) };
}
