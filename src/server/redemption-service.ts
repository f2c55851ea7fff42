// coupon.v1.CouponService redemption handlers, for the payment service: validate, call the
// redemption domain (src/redemption), map the result. The state machine and its reasons live there.
import type { ServiceImpl } from '@connectrpc/connect';
import type { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import type { Redemption } from '../redemption/redemption.ts';
import { userCouponMessage } from './coupon-service.ts';
import { requireCouponId, requireId } from '../domain/ids.ts';

export function redemptionHandlers(redemption: Redemption): Pick<ServiceImpl<typeof CouponService>, 'redeemCoupon' | 'cancelRedemption'> {
  return {
    async redeemCoupon(req) {
      const couponId = requireCouponId('coupon_id', req.couponId);
      const userId = requireId('user_id', req.userId);
      const orderId = requireId('order_id', req.orderId);
      const view = await redemption.redeem(couponId, userId, orderId);
      return { userCoupon: userCouponMessage(view) };
    },
    async cancelRedemption(req) {
      const couponId = requireCouponId('coupon_id', req.couponId);
      const userId = requireId('user_id', req.userId);
      const orderId = requireId('order_id', req.orderId);
      const { view } = await redemption.cancel(couponId, userId, orderId);
      return { userCoupon: userCouponMessage(view) };
    },
  };
}
