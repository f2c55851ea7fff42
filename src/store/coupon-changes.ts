// The ledger side of an operator's change to a coupon (catalog/changes.ts): the coupon row, locked
// for the change, and the coupon_changes audit table (src/store/migrations.ts, 006).
import type { Knex } from 'knex';
import type { CouponRow } from './coupons.ts';

export type ChangeAction = 'UPDATE' | 'PAUSE' | 'RESUME' | 'CLOSE';

/** The coupon's row, locked until the transaction ends: changes to one coupon run one at a time. */
export async function lockCoupon(trx: Knex.Transaction, id: string): Promise<CouponRow | undefined> {
  return trx<CouponRow>('coupons').where({ id }).forUpdate().first();
}

export type CouponFields = Pick<CouponRow, 'name' | 'total_quantity' | 'closes_at' | 'valid_until' | 'paused_at' | 'completed_at'>;

/** Writes the changed fields and the audit row in the caller's transaction. */
export async function writeCouponChange(trx: Knex.Transaction, id: string, action: ChangeAction, by: string, before: CouponFields, after: CouponFields): Promise<void> {
  await trx('coupons').where({ id }).update(after);
  await trx('coupon_changes').insert({ coupon_id: id, action, changed_by: by, before: JSON.stringify(before), after: JSON.stringify(after) });
}

export interface CouponChangeRow { id: string; coupon_id: string; action: ChangeAction; changed_by: string; before: CouponFields; after: CouponFields; changed_at: Date }

/** A coupon's recorded changes, oldest first. */
export async function couponChanges(db: Knex, couponId: string): Promise<CouponChangeRow[]> {
  return db<CouponChangeRow>('coupon_changes').where({ coupon_id: couponId }).orderBy('id');
}
