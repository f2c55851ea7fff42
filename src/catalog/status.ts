// A coupon's status (coupon.proto's CouponStatus), derived from its ledger row and the gate's count
// of winners; and the same rule in SQL, so ListCoupons reads only the rows that can have a status.
import type { Redis } from '../store/redis.ts';
import type { CouponRow } from '../store/coupons.ts';
import { couponKeys } from '../store/keys.ts';

/** coupon.proto's CouponStatus. */
export type CouponStatusName = 'SCHEDULED' | 'OPEN' | 'SOLD_OUT' | 'CLOSED' | 'COMPLETE' | 'PAUSED' | 'EXPIRED';

export interface CouponView {
  row: CouponRow;
  accepted: number;
  issued: number;
  remaining: number;
  status: CouponStatusName;
}

/** The first status that applies, in coupon.proto's order. statusCandidates below must agree. */
export function deriveStatus(row: Pick<CouponRow, 'opens_at' | 'closes_at' | 'valid_until' | 'total_quantity'> & Partial<Pick<CouponRow, 'paused_at'>>, accepted: number, issued: number, nowMs: number): CouponStatusName {
  if (nowMs < row.opens_at.getTime()) return 'SCHEDULED';
  if (row.valid_until && nowMs >= row.valid_until.getTime()) return 'EXPIRED';
  if (issued >= row.total_quantity) return 'COMPLETE';
  if (accepted >= row.total_quantity) return 'SOLD_OUT';
  if (row.closes_at && nowMs >= row.closes_at.getTime()) return 'CLOSED';
  // The gate's order too (gate-reserve.lua): a paused coupon that sold out or closed says so.
  if (row.paused_at) return 'PAUSED';
  return 'OPEN';
}

/** The coupon as callers see it: `accepted` is the gate's count, at least the ledger's. */
export function couponView(row: CouponRow, accepted: number, nowMs: number): CouponView {
  const issued = row.issued_count;
  return {
    row, accepted, issued,
    remaining: Math.max(0, row.total_quantity - accepted),
    status: deriveStatus(row, accepted, issued, nowMs),
  };
}

/** The gate's winners; without gate state (Redis lost it, or it expired), the ledger is the best lower bound. */
export async function acceptedCount(redis: Redis, row: CouponRow): Promise<number> {
  return Math.max(await redis.hlen(couponKeys(row.id).winners), row.issued_count);
}

const OPENED = 'opens_at <= :now';
const NOT_EXPIRED = '(valid_until IS NULL OR valid_until > :now)';
const UNITS_LEFT = 'issued_count < total_quantity';

/**
 * SQL over `coupons` (named bindings, :now a timestamp) true for every row that can have `status`
 * at `now`: exactly those for the statuses the ledger decides alone (SCHEDULED, EXPIRED, COMPLETE),
 * a superset for those that also depend on the gate's count (SOLD_OUT, CLOSED, OPEN), which the
 * caller then settles with deriveStatus. The timestamp columns hold milliseconds (callers' times),
 * so they compare with a JavaScript Date as deriveStatus compares them.
 */
export function statusCandidates(status: CouponStatusName): string {
  switch (status) {
    case 'SCHEDULED': return 'opens_at > :now';
    case 'EXPIRED': return `${OPENED} AND valid_until <= :now`;
    case 'COMPLETE': return `${OPENED} AND ${NOT_EXPIRED} AND issued_count >= total_quantity`;
    case 'SOLD_OUT': return `${OPENED} AND ${NOT_EXPIRED} AND ${UNITS_LEFT}`;
    case 'CLOSED': return `${OPENED} AND ${NOT_EXPIRED} AND ${UNITS_LEFT} AND closes_at <= :now`;
    case 'OPEN': return `${OPENED} AND ${NOT_EXPIRED} AND ${UNITS_LEFT} AND (closes_at IS NULL OR closes_at > :now) AND paused_at IS NULL`;
    case 'PAUSED': return `${OPENED} AND ${NOT_EXPIRED} AND ${UNITS_LEFT} AND (closes_at IS NULL OR closes_at > :now) AND paused_at IS NOT NULL`;
  }
}
