// Reads of one user's coupon. Redis answers first (it sees PENDING, which the ledger cannot);
// the ledger answers when Redis has no state for the user (for example after a Redis restart).
import type { Redis } from '../store/redis.ts';
import { DomainError } from '../domain/errors.ts';
import type { Db } from '../store/db.ts';
import { findCoupon, findUserCoupon, type UserCouponRow } from '../store/coupons.ts';
import { couponKeys, parseRedemptionValue } from '../store/keys.ts';
import { isUuid } from '../domain/ids.ts';
import type { UserCouponStateName } from './catalog.ts';
import { afterKeyset, decodePageToken, encodePageToken, timeUs } from './page-token.ts';

export interface UserCouponView {
  couponId: string;
  userId: string;
  seq: number;
  state: UserCouponStateName;
  issuedAt: Date | null;
  orderId: string;
  redeemedAt: Date | null;
}

export function fromLedger(row: UserCouponRow): UserCouponView {
  return {
    couponId: row.coupon_id, userId: row.user_id, seq: row.seq,
    state: row.order_id ? 'REDEEMED' : 'ISSUED',
    issuedAt: row.issued_at, orderId: row.order_id ?? '', redeemedAt: row.redeemed_at,
  };
}

export async function getUserCoupon(db: Db, redis: Redis, couponId: string, userId: string): Promise<UserCouponView> {
  const k = couponKeys(couponId);
  const [seq, issuedMs, redeem, redeemLoaded] = await redis.pipeline().hget(k.winners, userId).hget(k.issued, userId).hget(k.redeem, userId).get(k.redeemLoaded).exec()
    .then((res) => (res ?? []).map(([err, v]) => { if (err) throw err; return v as string | null; }));
  // Until redemption state is reloaded after a Redis loss, Redis may not know a redemption the
  // ledger has: read the ledger instead.
  if (issuedMs && !redeemLoaded && isUuid(couponId)) {
    const row = await findUserCoupon(db, couponId, userId);
    if (row) return fromLedger(row);
  }
  if (issuedMs) {
    const parsed = parseRedemptionValue(redeem);
    const r = parsed && { redeemed: parsed.state === 'R', orderId: parsed.orderId, atMs: parsed.atMs };
    return {
      couponId, userId, seq: Number(seq),
      state: r?.redeemed ? 'REDEEMED' : 'ISSUED',
      issuedAt: new Date(Number(issuedMs)),
      orderId: r?.redeemed ? r.orderId : '',
      redeemedAt: r?.redeemed ? new Date(r.atMs) : null,
    };
  }
  if (isUuid(couponId)) {
    const row = await findUserCoupon(db, couponId, userId);
    if (row) return fromLedger(row);
  }
  if (seq) return { couponId, userId, seq: Number(seq), state: 'PENDING', issuedAt: null, orderId: '', redeemedAt: null };
  if (!isUuid(couponId) || !(await findCoupon(db, couponId))) {
    throw new DomainError('COUPON_NOT_FOUND', `no coupon with id ${couponId}`, { coupon_id: couponId });
  }
  return { couponId, userId, seq: 0, state: 'NOT_REQUESTED', issuedAt: null, orderId: '', redeemedAt: null };
}

export interface Page { items: UserCouponView[]; nextToken: string }

/** Keyset pagination over the ledger, newest issued first (src/catalog/page-token.ts). */
export async function listUserCoupons(db: Db, userId: string, pageSize: number, pageToken: string): Promise<Page> {
  const scope = { u: userId };
  const after = pageToken ? decodePageToken(pageToken, scope, 'for this user') : undefined;
  const query = db<UserCouponRow>('user_coupons').where({ user_id: userId })
    .select('*', db.raw(`${timeUs('issued_at')} AS issued_at_us`))
    .orderBy([{ column: 'issued_at', order: 'desc' }, { column: 'coupon_id', order: 'desc' }])
    .limit(pageSize + 1);
  if (after) query.andWhereRaw(afterKeyset('issued_at', 'coupon_id'), [after.at, after.id]);
  const rows = (await query) as (UserCouponRow & { issued_at_us: string })[];
  const items = rows.slice(0, pageSize).map(fromLedger);
  const last = rows.length > pageSize ? rows[pageSize - 1] : undefined;
  const nextToken = last ? encodePageToken({ at: last.issued_at_us, id: last.coupon_id }, scope) : '';
  return { items, nextToken };
}
