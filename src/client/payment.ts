// The payment service's side of redemption, over @grpc/grpc-js: redeem a coupon for an order at
// checkout, and compensate when the payment fails. Both calls are idempotent per order id, so this
// helper retries what may have been lost (UNAVAILABLE, DEADLINE_EXCEEDED) with the same order id,
// and turns the business refusals into values the caller must handle.
//
//   const coupons = createPaymentCoupons('127.0.0.1:8080', { token: () => myTokens.current() });
//   const r = await coupons.redeem({ couponId, userId }, orderId);
//   if (!r.ok) return declineCoupon(r.reason);       // COUPON_ALREADY_REDEEMED, COUPON_EXPIRED, …
//   … if the payment fails:
//   await coupons.cancel({ couponId, userId }, orderId);
import * as grpc from '@grpc/grpc-js';
import type { UserCoupon } from '../../gen/coupon/v1/coupon_pb.js';
import { CouponService } from '../../gen/coupon/v1/coupon_service_pb.js';
import { CouponCallError, createGrpcClient, type ClientOptions, type GrpcClient } from './grpc.ts';
import { canonicalCouponId } from '../domain/ids.ts';

/** Why RedeemCoupon refused; retrying the same request gets the same answer. */
export type RedeemRefusal = 'COUPON_NOT_FOUND' | 'COUPON_NOT_ISSUED' | 'COUPON_ALREADY_REDEEMED' | 'COUPON_EXPIRED' | 'REDEMPTION_CANCELLED';
/** Why CancelRedemption refused: the coupon is redeemed by another order. */
export type CancelRefusal = 'COUPON_NOT_FOUND' | 'ORDER_MISMATCH';

export type Outcome<R> = { ok: true; userCoupon: UserCoupon } | { ok: false; reason: R; message: string };

export interface CouponRef { couponId: string; userId: string }

export interface PaymentCouponsOptions extends ClientOptions {
  /** Tries per call for UNAVAILABLE and DEADLINE_EXCEEDED (same order id each time). Default 4. */
  attempts?: number;
  /** Deadline of each try in ms. Default 3,000. */
  timeoutMs?: number;
  /** First retry delay in ms, doubling. Default 100. */
  backoffMs?: number;
}

export interface PaymentCoupons {
  /** Binds the coupon to the order. OK again for the same order; a refusal is a value, not an error. */
  redeem(ref: CouponRef, orderId: string): Promise<Outcome<RedeemRefusal>>;
  /**
   * Compensates the order: the coupon is usable again, and the order can never redeem it later.
   * Safe to call blindly (a coupon the order never redeemed is an OK no-op) and more than once.
   */
  cancel(ref: CouponRef, orderId: string): Promise<Outcome<CancelRefusal>>;
  readonly client: GrpcClient<typeof CouponService>;
  close(): void;
}

const REDEEM_REFUSALS: readonly string[] = ['COUPON_NOT_FOUND', 'COUPON_NOT_ISSUED', 'COUPON_ALREADY_REDEEMED', 'COUPON_EXPIRED', 'REDEMPTION_CANCELLED'];
const CANCEL_REFUSALS: readonly string[] = ['COUPON_NOT_FOUND', 'ORDER_MISMATCH'];
// The call may or may not have taken effect; repeating it with the same order id is safe.
const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED]);

// The service answers with the lower-case spelling of a coupon id whatever the caller sent; sending
// it so keeps the caller's own logs and retries keyed the same way. A malformed id goes as it is, and
// the service refuses it with INVALID_FIELD.
const canonical = (ref: CouponRef): CouponRef => ({ couponId: canonicalCouponId(ref.couponId) ?? ref.couponId, userId: ref.userId });

/** `address` is host:port of coupon-api, for example 127.0.0.1:8080. */
export function createPaymentCoupons(address: string, options: PaymentCouponsOptions = {}): PaymentCoupons {
  const client = createGrpcClient(CouponService, address, options);
  const attempts = options.attempts ?? 4;
  const timeoutMs = options.timeoutMs ?? 3_000;
  const backoffMs = options.backoffMs ?? 100;

  async function call<R extends string>(refusals: readonly string[], fn: () => Promise<{ userCoupon?: UserCoupon }>): Promise<Outcome<R>> {
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await fn();
        return { ok: true, userCoupon: res.userCoupon! };
      } catch (err) {
        if (!(err instanceof CouponCallError)) throw err;
        if (refusals.includes(err.reason)) return { ok: false, reason: err.reason as R, message: err.message };
        if (!RETRYABLE.has(err.code) || attempt >= attempts) throw err;
        await new Promise((r) => setTimeout(r, backoffMs * 2 ** (attempt - 1)));
      }
    }
  }

  return {
    client,
    redeem: (ref, orderId) => call<RedeemRefusal>(REDEEM_REFUSALS, () => client.redeemCoupon({ ...canonical(ref), orderId }, { timeoutMs })),
    cancel: (ref, orderId) => call<CancelRefusal>(CANCEL_REFUSALS, () => client.cancelRedemption({ ...canonical(ref), orderId }, { timeoutMs })),
    close: () => client.close(),
  };
}
