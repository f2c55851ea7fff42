// Everything stored about a set of coupons, as one comparable value: their rows in PostgreSQL
// (coupons, user_coupons, redemption_cancellations), every Redis key of each coupon
// (src/store/keys.ts) and the environment's coupon index. Tests take it before and after calls
// that must change nothing, and compare.
import type { Redis } from 'ioredis';
import type { Db } from '../../src/store/db.ts';
import { couponKeys } from '../../src/store/keys.ts';

export type CouponState = Record<string, unknown>;

const sorted = (xs: string[]) => [...xs].sort();
const sortedEntries = (h: Record<string, string>) => Object.fromEntries(Object.entries(h).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

export async function couponState(db: Db, redis: Redis, couponIds: string[], _topicPrefix: string): Promise<CouponState> {
  const pipeline = redis.pipeline();
  for (const id of couponIds) {
    const k = couponKeys(id);
    pipeline.hgetall(k.meta).hgetall(k.winners).get(k.next).lrange(k.free, '0', '-1').zrange(k.pending, '0', '-1', 'WITHSCORES')
      .smembers(k.released).hgetall(k.claimed).hgetall(k.issued).hgetall(k.redeem).smembers(k.cancelled)
      .zrange(k.outbox, '0', '-1', 'WITHSCORES').get(k.redeemLoaded);
  }
  const replies = ((await pipeline.exec()) ?? []).map(([err, v]) => { if (err) throw err; return v; });
  const perCoupon = 12;
  const redisState: Record<string, unknown> = {};
  couponIds.forEach((id, i) => {
    const [meta, winners, next, free, pending, released, claimed, issued, redeem, cancelled, outbox, redeemLoaded] = replies.slice(i * perCoupon, (i + 1) * perCoupon);
    redisState[id] = {
      meta: sortedEntries(meta as Record<string, string>), winners: sortedEntries(winners as Record<string, string>), next, free, pending,
      released: sorted(released as string[]), claimed: sortedEntries(claimed as Record<string, string>), issued: sortedEntries(issued as Record<string, string>),
      redeem: sortedEntries(redeem as Record<string, string>), cancelled: sorted(cancelled as string[]), outbox, redeemLoaded,
    };
  });

  const [coupons, userCoupons, cancellations] = await Promise.all([
    db('coupons').whereIn('id', couponIds).orderBy('id'),
    db('user_coupons').whereIn('coupon_id', couponIds).orderBy(['coupon_id', 'user_id']),
    db('redemption_cancellations').whereIn('coupon_id', couponIds).orderBy(['coupon_id', 'user_id', 'order_id']),
  ]);
  // The index of active coupons (gate:active) is left out on purpose: it is the recovery loop's
  // bookkeeping (which coupons to look at), not coupon state, and a refused redeem may touch it.
  return { redis: redisState, postgres: { coupons, userCoupons, cancellations } };
}
