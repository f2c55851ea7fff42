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
  /** When an operator paused it (PauseCoupon); null while not paused. */
  paused_at: Date | null;
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

export async function insertCoupon(db: Db, row: Omit<CouponRow, 'created_at' | 'issued_count' | 'completed_at' | 'paused_at'>): Promise<CouponRow> {
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

/** A ledger row as the gate rebuild needs it. */
export interface LedgerRow { userId: string; seq: number; issuedAtMs: number }

/** Rows per ledger page: a rebuild holds one page in memory, never the coupon. */
export const LEDGER_PAGE = 5_000;

/**
 * The coupon's seqs in windows (from, to] of `size`, up to the highest seq in the ledger. Seqs are
 * unique per coupon, so a window holds at most `size` rows, and a query for one reads one bounded
 * range of the (coupon_id, seq) index whatever plan PostgreSQL picks (a LIMIT after `seq > x` can
 * turn into sorting the rest of the coupon, page after page, when the table's statistics are stale).
 */
export async function* seqWindows(db: Db, couponId: string, size: number): AsyncGenerator<[from: number, to: number]> {
  const [top] = await db<UserCouponRow>('user_coupons').where({ coupon_id: couponId }).max<{ top: number | null }[]>('seq as top');
  for (let from = 0; from < (top?.top ?? 0); from += size) yield [from, from + size];
}

/** The coupon's ledger rows in ascending seq order, a page (seq window) at a time. */
export async function* ledgerPages(db: Db, couponId: string, pageSize = LEDGER_PAGE): AsyncGenerator<LedgerRow[]> {
  for await (const [from, to] of seqWindows(db, couponId, pageSize)) {
    const rows = await db<UserCouponRow>('user_coupons')
      .where({ coupon_id: couponId }).andWhere('seq', '>', from).andWhere('seq', '<=', to)
      .orderBy('seq')
      .select<Pick<UserCouponRow, 'user_id' | 'seq' | 'issued_at'>[]>('user_id', 'seq', 'issued_at');
    if (rows.length > 0) yield rows.map((r) => ({ userId: r.user_id, seq: r.seq, issuedAtMs: r.issued_at.getTime() }));
  }
}
