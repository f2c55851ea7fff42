// coupon.v1.CouponService: each handler validates the request, calls one domain function and maps
// its result. Business rules live in the domain (gate, catalog, redemption).
import type { ServiceImpl } from '@connectrpc/connect';
import { create } from '@bufbuild/protobuf';
import { timestampDate, timestampFromDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { CouponSchema, CouponStatus, UserCouponState } from '../../gen/coupon/v1/coupon_pb.js';
import type { CouponCatalog, UserCouponStateName } from '../catalog/catalog.ts';
import type { CouponStatusName, CouponView } from '../catalog/status.ts';
import type { CouponChanges, CouponPatch } from '../catalog/changes.ts';
import { callerKey } from './auth.ts';
import { getUserCoupon, listUserCoupons, type UserCouponView } from '../catalog/user-coupons.ts';
import { invalidField } from '../domain/errors.ts';
import { requireCouponId, requireId, requireIntInRange, requireText } from '../domain/ids.ts';
import type { Gate } from '../gate/gate.ts';
import type { Redemption } from '../redemption/redemption.ts';
import type { Db } from '../store/db.ts';
import type { Redis } from '../store/redis.ts';
import { UserCouponSchema } from '../../gen/coupon/v1/coupon_pb.js';

export const MAX_TOTAL_QUANTITY = 10_000_000;
// Timestamps a caller may send: years 1970 to 9999.
const MAX_SECONDS = 253402300799n;

function requireTime(field: string, ts: Timestamp | undefined): Date | null {
  if (!ts) return null;
  if (ts.seconds < 0n || ts.seconds > MAX_SECONDS || ts.nanos < 0 || ts.nanos > 999_999_999) throw invalidField(field, 'must be a timestamp between 1970 and 9999');
  return timestampDate(ts);
}

/** A Timestamp in microseconds since the epoch, rounded up (created_at is kept to the microsecond). */
function requireTimeUs(field: string, ts: Timestamp | undefined): bigint | undefined {
  if (!ts) return undefined;
  requireTime(field, ts);
  return ts.seconds * 1_000_000n + BigInt(Math.ceil(ts.nanos / 1_000));
}

/** page_size and page_token of the list RPCs: the same rules for each. */
function requirePaging(req: { pageSize: number; pageToken: string }): { pageSize: number; pageToken: string } {
  const pageSize = requireIntInRange('page_size', req.pageSize, 0, 1_000) || 50;
  if (req.pageToken.length > 1_024) throw invalidField('page_token', 'must be at most 1024 characters');
  return { pageSize, pageToken: req.pageToken };
}

const STATUS_NUMBERS = Object.values(CouponStatus).filter((v) => typeof v === 'number');

/** A status filter: a value the enum has (UNSPECIFIED: every status). */
function requireStatus(field: string, value: CouponStatus): CouponStatusName | undefined {
  if (value === CouponStatus.UNSPECIFIED) return undefined;
  const name = CouponStatus[value] as CouponStatusName | undefined;
  if (name === undefined) throw invalidField(field, `must be a CouponStatus value (${Math.min(...STATUS_NUMBERS)} to ${Math.max(...STATUS_NUMBERS)}), got ${value}`);
  return name;
}

export function couponMessage(v: CouponView) {
  const r = v.row;
  return create(CouponSchema, {
    id: r.id,
    name: r.name,
    totalQuantity: BigInt(r.total_quantity),
    acceptedCount: BigInt(v.accepted),
    issuedCount: BigInt(v.issued),
    remaining: BigInt(v.remaining),
    status: CouponStatus[v.status],
    opensAt: timestampFromDate(r.opens_at),
    closesAt: r.closes_at ? timestampFromDate(r.closes_at) : undefined,
    createdAt: timestampFromDate(r.created_at),
    discountAmount: BigInt(r.discount_amount),
    validUntil: r.valid_until ? timestampFromDate(r.valid_until) : undefined,
    pausedAt: r.paused_at ? timestampFromDate(r.paused_at) : undefined,
  });
}

/** UpdateCoupon's update_mask paths (AIP-134), with the proto field each one names. */
const UPDATABLE = new Set(['name', 'closes_at', 'valid_until', 'total_quantity']);

export const userCouponState = (s: UserCouponStateName) => UserCouponState[s];

export function userCouponMessage(v: UserCouponView) {
  return create(UserCouponSchema, {
    couponId: v.couponId,
    userId: v.userId,
    seq: BigInt(v.seq),
    state: userCouponState(v.state),
    issuedAt: v.issuedAt ? timestampFromDate(v.issuedAt) : undefined,
    orderId: v.orderId,
    redeemedAt: v.redeemedAt ? timestampFromDate(v.redeemedAt) : undefined,
  });
}

export interface CouponServiceDeps {
  db: Db;
  redis: Redis;
  catalog: CouponCatalog;
  changes: CouponChanges;
  gate: Gate;
  redemption: Redemption;
}

/** coupon.v1.CouponService: every RPC, in one object the compiler checks is complete. */
export function couponService(d: CouponServiceDeps): ServiceImpl<typeof CouponService> {
  return {
    async createCoupon(req) {
      const name = requireText('name', req.name, 200);
      const totalQuantity = requireIntInRange('total_quantity', req.totalQuantity, 1, MAX_TOTAL_QUANTITY);
      const discountAmount = requireIntInRange('discount_amount', req.discountAmount, 0, 1_000_000_000);
      const opensAt = requireTime('opens_at', req.opensAt) ?? new Date();
      const closesAt = requireTime('closes_at', req.closesAt);
      const validUntil = requireTime('valid_until', req.validUntil);
      if (closesAt && closesAt <= opensAt) throw invalidField('closes_at', 'must be after opens_at');
      if (validUntil && validUntil <= opensAt) throw invalidField('valid_until', 'must be after opens_at');
      // A coupon won at the last moment of the window must still be redeemable.
      if (validUntil && closesAt && validUntil < closesAt) throw invalidField('valid_until', 'must not be before closes_at');
      const view = await d.catalog.createCoupon({ name, totalQuantity, opensAt, closesAt, discountAmount, validUntil });
      return { coupon: couponMessage(view) };
    },
    async updateCoupon(req, ctx) {
      const couponId = requireCouponId('coupon.id', req.coupon?.id ?? '');
      const paths = req.updateMask?.paths ?? [];
      if (paths.length === 0) throw invalidField('update_mask', `must name at least one of ${[...UPDATABLE].join(', ')}`);
      const unknown = paths.filter((p) => !UPDATABLE.has(p));
      if (unknown.length > 0) throw invalidField('update_mask', `cannot change ${unknown.join(', ')}; only ${[...UPDATABLE].join(', ')}`);
      const c = req.coupon!;
      const patch: CouponPatch = {};
      if (paths.includes('name')) patch.name = requireText('coupon.name', c.name, 200);
      if (paths.includes('total_quantity')) patch.totalQuantity = requireIntInRange('coupon.total_quantity', c.totalQuantity, 1, MAX_TOTAL_QUANTITY);
      if (paths.includes('closes_at')) patch.closesAt = requireTime('coupon.closes_at', c.closesAt);
      if (paths.includes('valid_until')) patch.validUntil = requireTime('coupon.valid_until', c.validUntil);
      const row = await d.changes.update(couponId, patch, ctx.values.get(callerKey).sub);
      return { coupon: couponMessage(await d.catalog.viewOf(row)) };
    },
    async pauseCoupon(req, ctx) {
      const row = await d.changes.pause(requireCouponId('coupon_id', req.couponId), ctx.values.get(callerKey).sub);
      return { coupon: couponMessage(await d.catalog.viewOf(row)) };
    },
    async resumeCoupon(req, ctx) {
      const row = await d.changes.resume(requireCouponId('coupon_id', req.couponId), ctx.values.get(callerKey).sub);
      return { coupon: couponMessage(await d.catalog.viewOf(row)) };
    },
    async closeCoupon(req, ctx) {
      const row = await d.changes.close(requireCouponId('coupon_id', req.couponId), ctx.values.get(callerKey).sub);
      return { coupon: couponMessage(await d.catalog.viewOf(row)) };
    },
    async getCoupon(req) {
      const view = await d.catalog.getCoupon(requireCouponId('coupon_id', req.couponId));
      return { coupon: couponMessage(view) };
    },
    async listCoupons(req) {
      const { pageSize, pageToken } = requirePaging(req);
      const status = requireStatus('status', req.status);
      const createdSinceUs = requireTimeUs('created_since', req.createdSince);
      const createdBeforeUs = requireTimeUs('created_before', req.createdBefore);
      if (createdSinceUs !== undefined && createdBeforeUs !== undefined && createdBeforeUs <= createdSinceUs) throw invalidField('created_before', 'must be after created_since');
      const page = await d.catalog.listCoupons({ status, createdSinceUs, createdBeforeUs }, pageSize, pageToken);
      return { coupons: page.items.map(couponMessage), nextPageToken: page.nextToken };
    },
    async issueCoupon(req) {
      const couponId = requireCouponId('coupon_id', req.couponId);
      const userId = requireId('user_id', req.userId);
      const { seq, state } = await d.gate.issue(couponId, userId);
      return { seq: BigInt(seq), state: userCouponState(state) };
    },
    async getUserCoupon(req) {
      const couponId = requireCouponId('coupon_id', req.couponId);
      const userId = requireId('user_id', req.userId);
      // After a Redis loss, what the answer rests on is rebuilt first, as IssueCoupon and RedeemCoupon do.
      const view = await getUserCoupon(d.db, d.redis, couponId, userId, {
        gate: async (id) => (await d.gate.ensureArmed(id)) === 'ARMED',
        redemption: (id) => d.redemption.ensureLoaded(id),
      });
      return { userCoupon: userCouponMessage(view) };
    },
    async listUserCoupons(req) {
      const userId = requireId('user_id', req.userId);
      const { pageSize, pageToken } = requirePaging(req);
      const page = await listUserCoupons(d.db, userId, pageSize, pageToken);
      return { userCoupons: page.items.map(userCouponMessage), nextPageToken: page.nextToken };
    },
    // For the payment service; the state machine and its reasons live in src/redemption.
    async redeemCoupon(req) {
      const couponId = requireCouponId('coupon_id', req.couponId);
      const userId = requireId('user_id', req.userId);
      const orderId = requireId('order_id', req.orderId);
      const view = await d.redemption.redeem(couponId, userId, orderId);
      return { userCoupon: userCouponMessage(view) };
    },
    async cancelRedemption(req) {
      const couponId = requireCouponId('coupon_id', req.couponId);
      const userId = requireId('user_id', req.userId);
      const orderId = requireId('order_id', req.orderId);
      const { view } = await d.redemption.cancel(couponId, userId, orderId);
      return { userCoupon: userCouponMessage(view) };
    },
  };
}
