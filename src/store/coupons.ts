// PostgreSQL access for coupons and the user_coupons ledger.
import type { Db } from './db.ts';

export interface CouponRow {
  id: string;
  name: string;
  total_quantity: number;
  discount_amount: number;
  opens_at: Date;
  closes_at: Date | null;
  valid_until: Date | null;
  created_at: Date;
  issued_count: number;
  completed_at: Date | null;
}

export interface UserCouponRow {
  coupon_id: string;
  user_id: string;
  seq: number;
  requested_at: Date;
  issued_at: Date;
  order_id: string | null;
  redeemed_at: Date | null;
  redemption_version: number;
}

export async function insertCoupon(db: Db, row: Omit<CouponRow, 'created_at' | 'issued_count' | 'completed_at'>): Promise<CouponRow> {
  const [created] = await db<CouponRow>('coupons').insert(row).returning('*');
  return created!;
}

export async function deleteCoupon(db: Db, id: string): Promise<void> {
  await db('coupons').where({ id }).delete();
}

export async function findCoupon(db: Db, id: string): Promise<CouponRow | undefined> {
  return db<CouponRow>('coupons').where({ id }).first();
}

export async function findUserCoupon(db: Db, couponId: string, userId: string): Promise<UserCouponRow | undefined> {
  return db<UserCouponRow>('user_coupons').where({ coupon_id: couponId, user_id: userId }).first();
}

export async function ledgerOf(db: Db, couponId: string): Promise<{ userId: string; seq: number; issuedAtMs: number }[]> {
  const rows = await db<UserCouponRow>('user_coupons').where({ coupon_id: couponId }).select('user_id', 'seq', 'issued_at');
  return rows.map((r) => ({ userId: r.user_id, seq: r.seq, issuedAtMs: r.issued_at.getTime() }));
}
