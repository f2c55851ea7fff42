// The coupon catalog: creating coupons, reading them and their status. A coupon is a ledger row
// (PostgreSQL, the record) plus its armed gate in Redis; CreateCoupon makes both or neither.
import { randomUUID } from 'node:crypto';
import type { Redis } from '../store/redis.ts';
import { DomainError, refusal } from '../domain/errors.ts';
import { isUuid } from '../domain/ids.ts';
import { isOutage } from '../domain/outage.ts';
import type { Logger } from '../log.ts';
import type { Db } from '../store/db.ts';
import { deleteCoupon, findCoupon, insertCoupon, type CouponRow } from '../store/coupons.ts';
import { couponKeys } from '../store/keys.ts';
import type { CouponScripts } from '../store/scripts.ts';
import { gateArm, gateMetaOf } from '../gate/gate-scripts.ts';
import { listCoupons, type CouponFilter, type CouponPage } from './coupon-list.ts';
import { acceptedCount, couponView, type CouponView } from './status.ts';

export type UserCouponStateName = 'NOT_REQUESTED' | 'PENDING' | 'ISSUED' | 'REDEEMED';

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

export const couponNotFound = (couponId: string) => refusal('COUPON_NOT_FOUND', `no coupon with id ${couponId}`, { coupon_id: couponId });

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
      await gateArm(this.d.scripts, row.id, gateMetaOf(row, this.d.scripts.retentionMs));
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
    return this.view(row, await acceptedCount(this.d.redis, row));
  }

  /** Coupons newest first, a page at a time (src/catalog/coupon-list.ts). */
  listCoupons(filter: CouponFilter, pageSize: number, pageToken: string): Promise<CouponPage> {
    return listCoupons({ db: this.d.db, redis: this.d.redis, nowMs: this.now() }, filter, pageSize, pageToken);
  }

  /** A coupon just changed (catalog/changes.ts), with its live counts. */
  async viewOf(row: CouponRow): Promise<CouponView> {
    return this.view(row, await acceptedCount(this.d.redis, row));
  }

  private view(row: CouponRow, accepted: number): CouponView {
    return couponView(row, accepted, this.now());
  }
}
