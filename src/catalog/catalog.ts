// The coupon catalog: creating coupons, reading them and their status. A coupon is a ledger row
// (PostgreSQL, the record) plus its armed gate in Redis; CreateCoupon makes both or neither.
import { randomUUID } from 'node:crypto';
import type { Redis } from '../store/redis.ts';
import { DomainError } from '../domain/errors.ts';
import { isUuid } from '../domain/ids.ts';
import { isOutage } from '../domain/outage.ts';
import type { Logger } from '../log.ts';
import type { Db } from '../store/db.ts';
import { deleteCoupon, findCoupon, insertCoupon, type CouponRow } from '../store/coupons.ts';
import { couponKeys } from '../store/keys.ts';
import { gateMetaOf, type CouponScripts } from '../store/scripts.ts';

export type CouponStatusName = 'SCHEDULED' | 'OPEN' | 'SOLD_OUT' | 'CLOSED' | 'COMPLETE' | 'PAUSED';
export type UserCouponStateName = 'NOT_REQUESTED' | 'PENDING' | 'ISSUED' | 'REDEEMED';

export interface CouponView {
  row: CouponRow;
  accepted: number;
  issued: number;
  remaining: number;
  status: CouponStatusName;
}

export interface NewCoupon {
  name: string;
  totalQuantity: number;
  opensAt: Date;
  closesAt: Date | null;
  discountAmount: number;
  validUntil: Date | null;
}

export interface CatalogDeps {
  db: Db;
  redis: Redis;
  scripts: CouponScripts;
  log: Logger;
  now?: () => number;
}

export function deriveStatus(row: Pick<CouponRow, 'opens_at' | 'closes_at' | 'total_quantity'> & Partial<Pick<CouponRow, 'paused_at'>>, accepted: number, issued: number, nowMs: number): CouponStatusName {
  if (nowMs < row.opens_at.getTime()) return 'SCHEDULED';
  if (issued >= row.total_quantity) return 'COMPLETE';
  if (accepted >= row.total_quantity) return 'SOLD_OUT';
  if (row.closes_at && nowMs >= row.closes_at.getTime()) return 'CLOSED';
  // The gate's order too (gate-reserve.lua): a paused coupon that sold out or closed says so.
  if (row.paused_at) return 'PAUSED';
  return 'OPEN';
}

export const couponNotFound = (couponId: string) => new DomainError('COUPON_NOT_FOUND', `no coupon with id ${couponId}`, { coupon_id: couponId });

export class CouponCatalog {
  private readonly d: CatalogDeps;
  private readonly now: () => number;
  constructor(deps: CatalogDeps) {
    this.d = deps;
    this.now = deps.now ?? Date.now;
  }

  /**
   * Persists the coupon, then arms its gate; the gate's meta is written last, so nothing answers
   * IssueCoupon for the coupon before the rest is in place. If arming fails, what was written is
   * removed, in Redis and in the ledger: nothing half-made. Arming gives every key the coupon's
   * retention deadline (docs/architecture.md#retention). A new coupon joins the recovery loops' index only
   * with its first reservation (store/active-coupons.ts).
   */
  async createCoupon(input: NewCoupon): Promise<CouponView> {
    const row = await insertCoupon(this.d.db, {
      id: randomUUID(),
      name: input.name,
      total_quantity: input.totalQuantity,
      discount_amount: input.discountAmount,
      opens_at: input.opensAt,
      closes_at: input.closesAt,
      valid_until: input.validUntil,
    });
    const k = couponKeys(row.id);
    try {
      // A new coupon has no redemption history to load from the ledger.
      await this.d.redis.set(k.redeemLoaded, '1');
      await this.d.scripts.gateArm(row.id, gateMetaOf(row, this.d.scripts.retentionMs));
    } catch (err) {
      await this.d.redis.del(k.meta, k.next, k.redeemLoaded).catch((e: unknown) => this.d.log.error({ couponId: row.id, err: (e as Error).message }, 'could not remove the keys of a coupon whose creation failed'));
      await deleteCoupon(this.d.db, row.id).catch((e: unknown) => this.d.log.error({ couponId: row.id, err: (e as Error).message }, 'could not remove the row of a coupon whose creation failed'));
      if (isOutage(err)) throw new DomainError('BACKEND_UNAVAILABLE', 'Redis is unreachable; the coupon was not created', {}, err);
      throw err;
    }
    this.d.log.info({ couponId: row.id, total: row.total_quantity }, 'coupon created');
    return this.view(row, 0);
  }

  async getCoupon(couponId: string): Promise<CouponView> {
    const row = isUuid(couponId) ? await findCoupon(this.d.db, couponId) : undefined;
    if (!row) throw couponNotFound(couponId);
    const accepted = await this.d.redis.hlen(couponKeys(couponId).winners);
    // Without gate state (Redis lost it, or it expired), the ledger is the best lower bound.
    return this.view(row, Math.max(accepted, row.issued_count));
  }

  /** A coupon just changed (catalog/changes.ts), with its live counts. */
  async viewOf(row: CouponRow): Promise<CouponView> {
    const accepted = await this.d.redis.hlen(couponKeys(row.id).winners);
    return this.view(row, Math.max(accepted, row.issued_count));
  }

  private view(row: CouponRow, accepted: number): CouponView {
    const issued = row.issued_count;
    return {
      row, accepted, issued,
      remaining: Math.max(0, row.total_quantity - accepted),
      status: deriveStatus(row, accepted, issued, this.now()),
    };
  }
}
