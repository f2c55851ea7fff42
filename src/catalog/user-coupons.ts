// Reads of one user's coupon. Redis answers first (it sees PENDING, which the ledger cannot);
// the ledger answers when Redis has no state for the user (for example after a Redis restart).
import type { Redis } from '../store/redis.ts';
import { DomainError } from '../domain/errors.ts';
import type { Db } from '../store/db.ts';
import { findCoupon, findUserCoupon, type UserCouponRow } from '../store/coupons.ts';
import { couponKeys, parseRedemptionValue } from '../store/keys.ts';
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

/**
 * What a read waits for after a Redis loss, so that no answer rests on state the ledger may not
 * have yet (docs/api.md#getusercoupon):
 * - "never won" (NOT_REQUESTED) rests on absence: a winner's record may still be in flight to the
 *   ledger, so the coupon's gate is rebuilt first;
 * - a held coupon's redemption: the ledger may still lag a change answered OK, so the coupon's
 *   redemption state is loaded first.
 * Both throw BACKEND_UNAVAILABLE (retry) while they wait.
 */
export interface ReadRecovery {
  /** Rebuilds the gate if Redis lost it; true when a gate is armed now (false: past retention, or unknown). */
  gate(couponId: string, userId: string): Promise<boolean>;
  redemption(couponId: string): Promise<void>;
}

interface RedisView { seq: string | null; issuedMs: string | null; redeem: string | null; redeemLoaded: string | null; armed: boolean }

async function readRedis(redis: Redis, couponId: string, userId: string): Promise<RedisView> {
  const k = couponKeys(couponId);
  const res = await redis.pipeline().hget(k.winners, userId).hget(k.issued, userId).hget(k.redeem, userId).get(k.redeemLoaded).exists(k.meta).exec();
  const [seq, issuedMs, redeem, redeemLoaded, armed] = (res ?? []).map(([err, v]) => { if (err) throw err; return v; });
  return { seq: seq as string | null, issuedMs: issuedMs as string | null, redeem: redeem as string | null, redeemLoaded: redeemLoaded as string | null, armed: armed === 1 };
}

/** Redis's redemption state of a held coupon, over its seq and issued time. */
function withRedemption(base: Omit<UserCouponView, 'state' | 'orderId' | 'redeemedAt'>, redeem: string | null): UserCouponView {
  const parsed = parseRedemptionValue(redeem);
  const redeemed = parsed?.state === 'R';
  return { ...base, state: redeemed ? 'REDEEMED' : 'ISSUED', orderId: redeemed ? parsed.orderId : '', redeemedAt: redeemed ? new Date(parsed.atMs) : null };
}

export async function getUserCoupon(db: Db, redis: Redis, couponId: string, userId: string, recovery?: ReadRecovery): Promise<UserCouponView> {
  let r = await readRedis(redis, couponId, userId);
  let row = r.issuedMs ? undefined : await findUserCoupon(db, couponId, userId);
  if (recovery && !r.redeemLoaded && (r.issuedMs || row)) {
    await recovery.redemption(couponId);
    r = await readRedis(redis, couponId, userId);
    row = r.issuedMs ? undefined : await findUserCoupon(db, couponId, userId);
  }
  if (r.issuedMs && r.redeemLoaded) return withRedemption({ couponId, userId, seq: Number(r.seq), issuedAt: new Date(Number(r.issuedMs)) }, r.redeem);
  // Held, with Redis's redemption state lost again (or no recovery asked for): the ledger's word.
  row ??= await findUserCoupon(db, couponId, userId);
  if (row) return r.redeemLoaded ? withRedemption({ couponId, userId, seq: row.seq, issuedAt: row.issued_at }, r.redeem) : fromLedger(row);
  if (r.seq) return { couponId, userId, seq: Number(r.seq), state: 'PENDING', issuedAt: null, orderId: '', redeemedAt: null };
  const coupon = await findCoupon(db, couponId);
  if (!coupon) throw new DomainError('COUPON_NOT_FOUND', `no coupon with id ${couponId}`, { coupon_id: couponId });
  // "Never won" from a gate Redis lost is only as good as the ledger, which may still miss a winner
  // in flight, unless every unit is in the ledger or the sale has not opened.
  const settled = coupon.issued_count >= coupon.total_quantity || coupon.opens_at.getTime() > Date.now();
  // Read once more from the rebuilt gate; a coupon past its retention is never armed again, and
  // its ledger is final.
  if (recovery && !r.armed && !settled && (await recovery.gate(couponId, userId))) {
    return getUserCoupon(db, redis, couponId, userId, { gate: () => Promise.resolve(false), redemption: recovery.redemption });
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
